"""Corpus files as users hold them: Parquet, JSON lines and plain text, plain or compressed.

The format is read from the file's first bytes, never from its name alone: a Parquet file or a
`.jsonl.gz` named `wiki.txt` is still read as what it is, and a file that is none of these (a zip,
a checkpoint, model weights) is refused in one line instead of being read as text with its bytes
replaced by U+FFFD. The name only decides between JSON lines and text once the bytes are text.

Every format yields *documents*, each a list of paragraphs:
  * text (`.txt`, `.txt.gz`, `.txt.zst`): lines are paragraphs, a blank line ends a document;
  * JSON lines (`.jsonl`, `.jsonl.gz`, `.jsonl.zst`): one object a line, its `text_field` string
    one document, the string's lines its paragraphs (OSCAR, CulturaX and most hub dumps);
  * Parquet: one row a document from the `text_field` column (the hub's `wikimedia/wikipedia`:
    id/url/title/text), read one row group at a time, never the whole file.
A file's *units* are what a reader can start at without reading what comes before: the whole file
for text and JSON lines (compressed streams cannot be entered midway), each row group for Parquet.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import io
import json
import warnings
from collections.abc import Callable, Iterator
from typing import IO

from flaxlm import storage
from flaxlm.errors import FlaxlmError

ACCEPTED = ("Parquet (.parquet), JSON lines (.jsonl, .jsonl.gz, .jsonl.zst) and UTF-8 text "
            "(.txt, .txt.gz)")
DEFAULT_TEXT_FIELD = "text"
SNIFF_BYTES = 1 << 16
# Text may hold some broken bytes (they are replaced and counted, see `_text_documents`); past this
# share of NUL or invalid UTF-8 bytes in the first `SNIFF_BYTES` the file is not text at all.
MAX_BAD_BYTE_SHARE = 0.3
_PARQUET_MAGIC = b"PAR1"
_COMPRESSION_MAGIC = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd"}
# Formats people point a corpus flag at by mistake, named in the refusal.
_OTHER_MAGIC = {
    b"PK\x03\x04": "a zip archive",
    b"BZh": "bzip2-compressed data",
    b"\xfd7zXZ\x00": "xz data",
    b"7z\xbc\xaf\x27\x1c": "a 7z archive",
    b"ARROW1": "an Arrow IPC file",
    b"\x93NUMPY": "a NumPy array",
    b"SQLite format 3\x00": "an SQLite database",
    b"\x89HDF": "an HDF5 file",
    b"\x7fELF": "an executable",
    b"%PDF": "a PDF document",
    b"\x89PNG": "a PNG image",
    b"\x04\x22\x4d\x18": "lz4-compressed data",
}
_JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
# Longer lines are cut at whitespace: tokenizers and the packer then never see a giant string.
MAX_PARAGRAPH_CHARS = 100_000
# A file without blank lines would otherwise be one document held whole in memory; past this
# size a document is cut (costing one extra separator token per 10 M characters).
MAX_DOCUMENT_CHARS = 10_000_000


@dataclasses.dataclass(frozen=True)
class CorpusFile:
    path: str
    layout: str  # "parquet", "jsonl" or "text"
    compression: str = ""  # "", "gzip" or "zstd" (text and JSON lines)


def identify(path: str) -> CorpusFile:
    """What `path` holds, from its first bytes; anything but a corpus is refused in one line."""
    try:
        with storage.open_file(path, "rb") as f:
            head = f.read(SNIFF_BYTES)
    except OSError as e:
        raise FlaxlmError(f"{path}: cannot be read ({e})") from None
    if head.startswith(_PARQUET_MAGIC):
        return CorpusFile(path, "parquet")
    compression = next((c for m, c in _COMPRESSION_MAGIC.items() if head.startswith(m)), "")
    if compression:
        try:
            with _opened(path, compression) as f:
                head = f.read(SNIFF_BYTES)
        except (OSError, EOFError, ValueError) as e:
            raise _refusal(path,
                           f"{compression}-compressed but cannot be decompressed: {e}") from None
    what = _binary_kind(head)
    if what:
        raise _refusal(path, f"{compression}-compressed {what}" if compression else what)
    stem = _without_compression_suffix(path).lower()
    if stem.endswith(_JSON_SUFFIXES) or (not stem.endswith(".txt") and _starts_json_object(head)):
        return CorpusFile(path, "jsonl", compression)
    return CorpusFile(path, "text", compression)


def _refusal(path: str, what: str) -> FlaxlmError:
    return FlaxlmError(f"{path}: not a corpus file ({what}); flaxlm reads {ACCEPTED}")


def _binary_kind(head: bytes) -> str:
    """A description of what `head` is if it is not text, else ""."""
    for magic, name in _OTHER_MAGIC.items():
        if head.startswith(magic):
            return name
    if len(head) > 262 and head[257:262] == b"ustar":
        return "a tar archive"
    bad = bad_byte_count(head[:-3] if len(head) == SNIFF_BYTES else head)  # may end mid-character
    if head and bad > MAX_BAD_BYTE_SHARE * len(head):
        return f"binary data: {bad} of its first {len(head)} bytes are NUL or invalid UTF-8"
    return ""


def bad_byte_count(data: bytes) -> int:
    """Bytes of `data` that are NUL or not part of valid UTF-8."""
    return len(data) - len(data.decode("utf-8", errors="ignore").replace("\x00", "").encode())


def _starts_json_object(head: bytes) -> bool:
    first = head.lstrip().split(b"\n", 1)[0].strip()
    if not first.startswith(b"{"):
        return False
    try:
        return isinstance(json.loads(first), dict)
    except ValueError:
        return False


def _without_compression_suffix(path: str) -> str:
    for suffix in (".gz", ".zst", ".zstd"):
        if path.lower().endswith(suffix):
            return path[:-len(suffix)]
    return path


@contextlib.contextmanager
def _opened(path: str, compression: str) -> Iterator[IO[bytes]]:
    """`path` as a stream of decompressed bytes, read as it goes."""
    with storage.open_file(path, "rb") as raw:
        if compression == "gzip":
            with gzip.GzipFile(fileobj=raw) as f:
                yield f
        elif compression == "zstd":
            import pyarrow as pa  # 0.4 s to import: only for Parquet and .zst corpora

            # pyarrow's zstd stream (no extra package); buffered, so lines can be iterated.
            stream = pa.CompressedInputStream(pa.PythonFile(raw, mode="r"), "zstd")
            yield io.BufferedReader(_RawReader(stream.read), buffer_size=1 << 20)
        else:
            yield raw


class _RawReader(io.RawIOBase):
    """A raw byte stream over `read(n)`, so `io.BufferedReader` can give lines."""
    def __init__(self, read: Callable[[int], bytes]):
        self._read = read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


# --- units --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Unit:
    """A part of a corpus file that can be read on its own: a Parquet row group, else the file."""

    file: CorpusFile
    row_group: int = -1  # -1: the whole file


def units(file: CorpusFile) -> list[Unit]:
    if file.layout != "parquet":
        return [Unit(file)]
    with _parquet(file.path) as pf:
        return [Unit(file, i) for i in range(pf.num_row_groups)]


@contextlib.contextmanager
def _parquet(path: str):
    import pyarrow  # 0.4 s to import: only for Parquet and .zst corpora
    import pyarrow.parquet as pq

    with storage.open_file(path, "rb") as raw:
        try:
            pf = pq.ParquetFile(raw)
        except (pyarrow.ArrowException, OSError) as e:
            raise FlaxlmError(f"{path}: a damaged Parquet file ({e})") from None
        yield pf


def documents(unit: Unit, text_field: str) -> Iterator[list[str]]:
    """The documents of one unit."""
    file = unit.file
    if file.layout == "parquet":
        yield from _parquet_documents(file.path, unit.row_group, text_field)
    elif file.layout == "jsonl":
        yield from _jsonl_documents(file, text_field)
    else:
        yield from _text_documents(file)


def _lines_of(text: str) -> list[str]:
    """A row's paragraphs: its lines, NULs dropped, over-long ones cut."""
    return [
        p for line in text.replace("\x00", "").splitlines() for p in split_long_text(line.strip())
    ]


def _parquet_documents(path: str, row_group: int, text_field: str) -> Iterator[list[str]]:
    import pyarrow as pa  # 0.4 s to import: only for Parquet and .zst corpora

    with _parquet(path) as pf:
        schema = pf.schema_arrow
        if text_field not in schema.names:
            raise FlaxlmError(f"{path}: has no column {text_field!r} (columns: {schema.names}); "
                              "set data.text_field (--text-field) to the one holding the text")
        kind = schema.field(text_field).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise FlaxlmError(f"{path}: column {text_field!r} holds {kind}, not text")
        groups = range(pf.num_row_groups) if row_group < 0 else [row_group]
        for group in groups:
            # Batches within a row group: memory holds ~1k rows, not a whole group.
            for batch in pf.iter_batches(batch_size=1024, row_groups=[group], columns=[text_field]):
                for text in batch.column(0).to_pylist():
                    paragraphs = _lines_of(text) if text else []
                    if paragraphs:
                        yield paragraphs


def _jsonl_documents(file: CorpusFile, text_field: str) -> Iterator[list[str]]:
    with _opened(file.path, file.compression) as f:
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except ValueError as e:
                raise FlaxlmError(f"{file.path}:{line_no}: not a JSON object ({e})") from None
            if not isinstance(row, dict):
                raise FlaxlmError(f"{file.path}:{line_no}: not a JSON object "
                                  f"(a {type(row).__name__})")
            if text_field not in row:
                raise FlaxlmError(f"{file.path}:{line_no}: no {text_field!r} field (fields: "
                                  f"{sorted(row)}); set data.text_field (--text-field) to the "
                                  "one holding the text")
            text = row[text_field]
            if text is None:
                continue
            if not isinstance(text, str):
                raise FlaxlmError(f"{file.path}:{line_no}: field {text_field!r} holds a "
                                  f"{type(text).__name__}, not text")
            paragraphs = _lines_of(text)
            if paragraphs:
                yield paragraphs


def _text_documents(file: CorpusFile) -> Iterator[list[str]]:
    bad_lines, first_bad = 0, 0
    paragraphs: list[str] = []
    chars = 0
    # Binary reading + per-line decoding: a broken byte spoils one line, not the whole file.
    with _opened(file.path, file.compression) as f:
        for line_no, raw in enumerate(f, start=1):
            line, clean = _decode_line(raw)
            if not clean:
                bad_lines += 1
                first_bad = first_bad or line_no
            if line_no == 1:
                line = line.removeprefix("\ufeff")
            line = line.strip()
            if line:
                paragraphs.extend(split_long_text(line))
                chars += len(line)
            if paragraphs and (not line or chars > MAX_DOCUMENT_CHARS):
                yield paragraphs
                paragraphs, chars = [], 0
    if paragraphs:
        yield paragraphs
    if bad_lines:
        warnings.warn(
            f"{file.path}: {bad_lines} line(s) had invalid UTF-8 or NUL bytes "
            f"(first at line {first_bad}); "
            "bad bytes were replaced by U+FFFD, NULs dropped, and the rest of the text used",
            stacklevel=2,
        )


def _decode_line(raw: bytes) -> tuple[str, bool]:
    """The line's text and whether it was clean UTF-8 without NUL bytes."""
    clean = True
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        line, clean = raw.decode("utf-8", errors="replace"), False
    if "\x00" in line:
        line, clean = line.replace("\x00", ""), False
    return line, clean


def split_long_text(text: str, max_chars: int = MAX_PARAGRAPH_CHARS) -> list[str]:
    """Cuts `text` into pieces of at most `max_chars`, at the last space of each window if any."""
    pieces = []
    start = 0
    while len(text) - start > max_chars:
        cut = text.rfind(" ", start + 1, start + max_chars)
        end = cut if cut > start else start + max_chars
        pieces.append(text[start:end])
        start = end
    pieces.append(text[start:])
    return [p for p in (piece.strip() for piece in pieces) if p]

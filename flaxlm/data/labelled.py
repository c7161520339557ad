"""Readers for word-labelled corpora (POS, NER): each file becomes a list of `Sentence`s.

Formats (`FORMATS`):
  conllu     Universal Dependencies: 10 tab-separated columns, the label is UPOS (column 4);
             multiword-token ranges (`1-2`) and empty nodes (`1.1`) are not words of the text.
  conll2002  one `token POS label` per line (space-separated), a blank line between sentences;
             `-DOCSTART-` lines are skipped.
  wikiner    one sentence per line, words as `token|POS|label` separated by spaces.
  panx       one `lang:token<TAB>label` per line, a blank line between sentences.
A malformed line, a missing label column or a file without sentences is a `FlaxlmError` naming
the file and line. Files may be local or `gs://` (flaxlm/storage.py).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterator

from flaxlm import storage
from flaxlm.errors import FlaxlmError


@dataclasses.dataclass(frozen=True)
class Sentence:
    words: tuple[str, ...]
    labels: tuple[str, ...]


def _lines(path: str) -> Iterator[tuple[int, str]]:
    if not storage.isfile(path):
        raise FlaxlmError(f"{path}: labelled data file not found")
    with storage.open_file(path) as f:
        for number, line in enumerate(f, 1):
            yield number, line.rstrip("\n").rstrip("\r")


def _blocks(path: str, parse: Callable[[str, str, int],
                                       tuple[str, str] | None]) -> Iterator[Sentence]:
    """Sentences separated by blank lines; `parse(line)` gives (word, label) or None to skip."""
    words: list[str] = []
    labels: list[str] = []
    for number, line in _lines(path):
        if not line.strip():
            if words:
                yield Sentence(tuple(words), tuple(labels))
                words, labels = [], []
            continue
        parsed = parse(path, line, number)
        if parsed is not None:
            words.append(parsed[0])
            labels.append(parsed[1])
    if words:
        yield Sentence(tuple(words), tuple(labels))


def _conllu_word(path: str, line: str, number: int) -> tuple[str, str] | None:
    if line.startswith("#"):
        return None
    columns = line.split("\t")
    if len(columns) != 10:
        raise FlaxlmError(f"{path}:{number}: a CoNLL-U word line has 10 tab-separated columns, "
                          f"this one has {len(columns)}")
    token_id, form, upos = columns[0], columns[1], columns[3]
    if "-" in token_id or "." in token_id:
        return None  # a multiword-token range or an empty node: not a word of the text
    if not token_id.isdigit():
        raise FlaxlmError(f"{path}:{number}: CoNLL-U word id {token_id!r} is not a number")
    if upos in ("", "_"):
        raise FlaxlmError(f"{path}:{number}: the UPOS column (4) is empty")
    return form, upos


def _conll2002_word(path: str, line: str, number: int) -> tuple[str, str] | None:
    columns = line.split()
    if columns[0] == "-DOCSTART-":
        return None
    if len(columns) != 3:
        raise FlaxlmError(f"{path}:{number}: a CoNLL-2002 line is 'token POS label' (3 columns), "
                          f"this one has {len(columns)}")
    return columns[0], columns[2]


def _panx_word(path: str, line: str, number: int) -> tuple[str, str] | None:
    columns = line.split("\t")
    if len(columns) != 2 or not columns[1].strip():
        raise FlaxlmError(f"{path}:{number}: a PAN-X line is 'lang:token<TAB>label', this one "
                          f"has {len(columns)} tab-separated column(s)")
    token = columns[0].split(":", 1)
    if len(token) != 2 or not token[1]:
        raise FlaxlmError(f"{path}:{number}: PAN-X token {columns[0]!r} lacks its 'lang:' prefix")
    return token[1], columns[1].strip()


def _wikiner(path: str) -> Iterator[Sentence]:
    for number, line in _lines(path):
        if not line.strip():
            continue
        words, labels = [], []
        for position, item in enumerate(line.split(), 1):
            fields = item.rsplit("|", 2)
            if len(fields) != 3 or not fields[0] or not fields[2]:
                raise FlaxlmError(f"{path}:{number}: WikiNER word {position} ({item!r}) is not "
                                  "'token|POS|label'")
            words.append(fields[0])
            labels.append(fields[2])
        yield Sentence(tuple(words), tuple(labels))


FORMATS: dict[str, Callable[[str], Iterator[Sentence]]] = {
    "conllu": lambda path: _blocks(path, _conllu_word),
    "conll2002": lambda path: _blocks(path, _conll2002_word),
    "wikiner": _wikiner,
    "panx": lambda path: _blocks(path, _panx_word),
}


def read_sentences(path: str, format_name: str) -> list[Sentence]:
    """Every sentence of `path` in `format_name`; a file without any is an error."""
    if format_name not in FORMATS:
        raise FlaxlmError(f"labelled data format {format_name!r} is not known (known: "
                          f"{', '.join(FORMATS)})")
    sentences = list(FORMATS[format_name](path))
    if not sentences:
        raise FlaxlmError(f"{path}: no sentences in this file (expected {format_name} format)")
    return sentences


def read_files(paths: tuple[str, ...], format_name: str) -> list[Sentence]:
    return [s for path in paths for s in read_sentences(path, format_name)]


def label_vocabulary(sentences: list[Sentence]) -> tuple[str, ...]:
    """The labels in sorted order (ids are positions): the same data gives the same ids."""
    return tuple(sorted({label for s in sentences for label in s.labels}))

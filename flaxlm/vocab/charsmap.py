"""A SentencePiece `precompiled_charsmap`, read back into its rules and recompiled with lowercasing.

Released tokenizers often normalize with a compiled charsmap and no rule name (XLM-R's
`tokenizer.json` holds its `Precompiled` normalizer; transformers 5's `XLMRobertaTokenizer` keeps
only that charsmap, whatever else the file's normalizer chain says). Uncasing such a tokenizer
therefore needs a new charsmap, not an added `Lowercase` step: every rule `key → value` becomes
`key → lower(value)`, and every character that lowercases and is no key gets `c → lower(c)`.
With longest-match lookup this is exactly "the source normalizer, then lowercase".

Blob layout (sentencepiece `normalizer.cc`): a little-endian uint32 trie size, a darts-clone
double array of that many bytes (keys: the UTF-8 bytes of the source text; value: an offset),
then the NUL-terminated UTF-8 replacement strings the offsets point into.
"""

from __future__ import annotations

import contextlib
import os
import struct
import sys
import tempfile

import numpy as np

from flaxlm.errors import FlaxlmError


def decompile(blob: bytes, where: str) -> dict[str, str]:
    """{source text: replacement} of a compiled charsmap."""
    if len(blob) < 4:
        raise FlaxlmError(f"{where}: precompiled_charsmap of {len(blob)} bytes is not a charsmap")
    (trie_size, ) = struct.unpack("<I", blob[:4])
    if trie_size % 4 or 4 + trie_size > len(blob):
        raise FlaxlmError(f"{where}: precompiled_charsmap trie size {trie_size} does not fit its "
                          f"{len(blob)} bytes")
    units = np.frombuffer(blob[4:4 + trie_size], dtype="<u4").astype(np.int64)
    strings = blob[4 + trie_size:]
    labels = units & ((1 << 31) | 0xFF)
    # A node's children sit at index ^ offset ^ byte (darts-clone's unit encoding).
    bases = np.arange(len(units)) ^ ((units >> 10) << ((units & (1 << 9)) >> 6))
    byte_values = np.arange(1, 256)
    rules: dict[str, str] = {}
    # Breadth first, one depth (one key byte) at a time over the whole frontier.
    nodes, keys = np.zeros(1, np.int64), [b""]
    while len(nodes):
        found_nodes, found_keys = [], []
        for lo in range(0, len(nodes), 2048):  # bounded memory: 2048 × 255 candidates
            children = bases[nodes[lo:lo + 2048]][:, None] ^ byte_values[None, :]
            inside = children < len(units)
            hit = inside & (labels[np.where(inside, children, 0)] == byte_values[None, :])
            parent_i, byte_i = np.nonzero(hit)
            found_nodes.append(children[parent_i, byte_i])
            found_keys += [
                keys[lo + p] + bytes([b + 1]) for p, b in zip(parent_i.tolist(), byte_i.tolist())
            ]
        nodes, keys = np.concatenate(found_nodes), found_keys
        leaves = np.nonzero((units[nodes] >> 8) & 1)[0]
        starts = units[bases[nodes[leaves]]] & ((1 << 31) - 1)
        for i, start in zip(leaves, starts):
            end = strings.index(b"\0", int(start))
            try:
                rules[keys[i].decode("utf-8")] = strings[int(start):end].decode("utf-8")
            except UnicodeDecodeError:
                raise FlaxlmError(f"{where}: precompiled_charsmap holds a rule that is not "
                                  "UTF-8") from None
    return rules


def lowercased_rules(rules: dict[str, str]) -> dict[str, str]:
    """The rules of "normalize, then lowercase": Python's `str.lower` of each character (full
    Unicode mappings such as İ → i̇; no context, so a word-final Σ becomes σ, not ς)."""
    out = {key: "".join(c.lower() for c in value) for key, value in rules.items()}
    for code in range(sys.maxunicode + 1):
        if 0xD800 <= code <= 0xDFFF:
            continue
        c = chr(code)
        if c not in out and c.lower() != c:
            out[c] = c.lower()
    return out


def compile_rules(rules: dict[str, str]) -> bytes:
    """The charsmap SentencePiece's builder compiles from `rules` (via its rule TSV file)."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    def hex_codes(text: str) -> str:
        return " ".join(f"{ord(c):X}" for c in text)

    with tempfile.TemporaryDirectory(prefix="flaxlm-charsmap-") as tmp:
        path = os.path.join(tmp, "rules.tsv")
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(f"{hex_codes(k)}\t{hex_codes(v)}\n" for k, v in sorted(rules.items()))
        with _native_stderr_silenced():
            normalizer = spm.SentencePieceNormalizer(rule_tsv=path)
    spec = sentencepiece_model_pb2.NormalizerSpec()
    spec.ParseFromString(normalizer.serialized_normalizer_spec())
    return spec.precompiled_charsmap


@contextlib.contextmanager
def _native_stderr_silenced():
    """SentencePiece's builder logs every compile (INFO lines) from C++ straight to fd 2; a
    failure still raises in Python."""
    saved = os.dup(2)
    with open(os.devnull, "wb") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def lowercased(blob: bytes, where: str) -> bytes:
    """A charsmap that normalizes as `blob` does (no rules when empty), then lowercases."""
    return compile_rules(lowercased_rules(decompile(blob, where) if blob else {}))

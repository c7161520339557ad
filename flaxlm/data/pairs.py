"""Labelled texts and text pairs for sequence classification: TSV, JSONL and TFDS readers.

Sources (comma-separated in `data.train_files` / `data.eval_files`):
  * `NAME.tsv`: a header line naming the columns `text`, optional `text_pair`, `label` (other
    columns are ignored), then one example per line, fields separated by tabs.
  * `NAME.jsonl`: one JSON object per line with the keys `text`, optional `text_pair`, `label`.
  * `tfds:NAME[:SPLIT]`: `xnli` / `xtreme_xnli` (premise, hypothesis; the `language` side) and
    `paws_x_wiki/LANG` (sentence1, sentence2); labels are the dataset's class names
    (XNLI: entailment, neutral, contradiction).
Files may be local or `gs://` (flaxlm/storage.py). Every problem names the file and line (or key)
at fault.
"""

from __future__ import annotations

import json
from typing import NamedTuple, Sequence

from flaxlm import storage
from flaxlm.data.sources import TFDS_PREFIX, parse_tfds_spec
from flaxlm.errors import FlaxlmError

TEXT, PAIR, LABEL = "text", "text_pair", "label"
# An example whose label the training data lacks: scored as an error, never predicted.
UNKNOWN_LABEL = -1


class Example(NamedTuple):
    text: str
    text_pair: str | None
    label: str


def read_examples(spec: str, *, language: str = "es") -> list[Example]:
    """All examples of one source (see the module docstring)."""
    if spec.startswith(TFDS_PREFIX):
        return _tfds_examples(spec, language)
    if not storage.isfile(spec):
        raise FlaxlmError(f"{spec}: no such file")
    if spec.endswith(".tsv"):
        examples = _tsv_examples(spec)
    elif spec.endswith((".jsonl", ".json")):
        examples = _jsonl_examples(spec)
    else:
        raise FlaxlmError(f"{spec}: unknown format; expected a .tsv or .jsonl file or tfds:NAME")
    if not examples:
        raise FlaxlmError(f"{spec}: holds no examples")
    return examples


def read_all(specs: Sequence[str], *, language: str = "es") -> list[Example]:
    examples = [e for spec in specs for e in read_examples(spec, language=language)]
    paired = {e.text_pair is not None for e in examples}
    if len(paired) > 1:
        raise FlaxlmError(f"{', '.join(specs)}: mixes single texts and text pairs")
    return examples


def _lines(path: str):
    with storage.open_file(path) as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n").rstrip("\r")
            if line.strip():
                yield number, line


def _tsv_examples(path: str) -> list[Example]:
    lines = _lines(path)
    first = next(lines, None)
    if first is None:
        raise FlaxlmError(f"{path}: empty file (expected a header line: text[<TAB>text_pair]"
                          "<TAB>label)")
    header_line, header = first[0], first[1].split("\t")
    for key in (TEXT, LABEL):
        if key not in header:
            raise FlaxlmError(f"{path}:{header_line}: no {key!r} column in the header "
                              f"({', '.join(header)})")
    text_at, label_at = header.index(TEXT), header.index(LABEL)
    pair_at = header.index(PAIR) if PAIR in header else None
    examples = []
    for number, line in lines:
        fields = line.split("\t")
        if len(fields) != len(header):
            raise FlaxlmError(f"{path}:{number}: {len(fields)} tab-separated fields, the header "
                              f"has {len(header)} ({', '.join(header)})")
        examples.append(
            _example(path, number, fields[text_at], None if pair_at is None else fields[pair_at],
                     fields[label_at]))
    return examples


def _jsonl_examples(path: str) -> list[Example]:
    examples, paired = [], None
    for number, line in _lines(path):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise FlaxlmError(f"{path}:{number}: not a JSON object ({e.msg})") from None
        if not isinstance(row, dict):
            raise FlaxlmError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        for key in (TEXT, LABEL):
            if key not in row:
                raise FlaxlmError(f"{path}:{number}: no {key!r} key (keys: {', '.join(row)})")
        if paired is not None and (PAIR in row) != paired:
            raise FlaxlmError(f"{path}:{number}: {PAIR!r} is {'missing' if paired else 'present'}"
                              " here but not on the lines before")
        paired = PAIR in row
        examples.append(_example(path, number, row[TEXT], row.get(PAIR), row[LABEL]))
    return examples


def _example(path: str, number: int, text, pair, label) -> Example:
    if not isinstance(text, str) or not text.strip():
        raise FlaxlmError(f"{path}:{number}: empty or non-text {TEXT!r}")
    if pair is not None and not isinstance(pair, str):
        raise FlaxlmError(f"{path}:{number}: non-text {PAIR!r}")
    label = str(label).strip()
    if not label:
        raise FlaxlmError(f"{path}:{number}: empty {LABEL!r}")
    return Example(text, pair, label)


def _tfds_examples(spec: str, language: str) -> list[Example]:
    import tensorflow_datasets as tfds  # seconds to import: only for a tfds: source

    name, split = parse_tfds_spec(spec)
    try:
        ds, info = tfds.load(name, split=split, shuffle_files=False, with_info=True)
    except Exception as e:  # tfds raises many types (not found, not prepared, bad split)
        raise FlaxlmError(f"{spec}: cannot load with tensorflow_datasets: "
                          f"{str(e).splitlines()[0]}") from e
    features = set(ds.element_spec)
    if LABEL not in features:
        raise FlaxlmError(f"{spec}: has no 'label' feature (features: {sorted(features)})")
    names = info.features[LABEL].names
    if {"premise", "hypothesis"} <= features:

        def texts(row):
            return _premise(row, language, spec), _hypothesis(row, language, spec)
    elif {"sentence1", "sentence2"} <= features:

        def texts(row):
            return row["sentence1"].decode("utf-8"), row["sentence2"].decode("utf-8")
    else:
        raise FlaxlmError(f"{spec}: neither premise/hypothesis nor sentence1/sentence2 features "
                          f"(features: {sorted(features)})")
    examples = [Example(*texts(row), names[int(row[LABEL])]) for row in ds.as_numpy_iterator()]
    if not examples:
        raise FlaxlmError(f"{spec}: holds no examples")
    return examples


def _premise(row, language: str, spec: str) -> str:
    if language not in row["premise"]:
        raise FlaxlmError(f"{spec}: no premise in language {language!r} "
                          f"(objective.sequence.language; has {sorted(row['premise'])})")
    return row["premise"][language].decode("utf-8")


def _hypothesis(row, language: str, spec: str) -> str:
    languages = [lang.decode("utf-8") for lang in row["hypothesis"]["language"]]
    if language not in languages:
        raise FlaxlmError(f"{spec}: no hypothesis in language {language!r}")
    return row["hypothesis"]["translation"][languages.index(language)].decode("utf-8")

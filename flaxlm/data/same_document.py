"""A sentence-pair task built from a raw corpus: do two paragraphs come from the same document?

The corpus has one paragraph per line and documents separated by blank lines (BERT's and
ELECTRA's pre-training format, e.g. ../shared/data/corpus/es.txt). Documents are dealt to
train/dev/test first, so no document's text is in two splits. Each example takes a paragraph of
a document and, with equal probability, another paragraph of the same document (`same`) or a
paragraph of another document of the same split (`different`). Paragraphs of 4 to `max_words`
words are used (shorter ones are mostly headings and command names), and only those that occur in
one document. Output: TSV files with the
header `text<TAB>text_pair<TAB>label`, read by `flaxlm.data.pairs`. The same arguments always
give the same files. Corpus and output directory may be local or `gs://`.

  python -m flaxlm.data.same_document ../shared/data/corpus/es.txt data/pairs_es
"""

from __future__ import annotations

import argparse
import collections
import os
import re
from typing import Sequence

import numpy as np

from flaxlm import storage
from flaxlm.errors import FlaxlmError

SPLITS = ("train", "dev", "test")
SAME, DIFFERENT = "same", "different"
MIN_WORDS = 4


def read_documents(path: str, max_words: int) -> list[list[str]]:
    """Documents as lists of usable paragraphs (whitespace collapsed, so no tab survives)."""
    if not storage.isfile(path):
        raise FlaxlmError(f"{path}: no such corpus file")
    blocks = re.split(r"\n\s*\n", storage.read_text(path))
    documents = [[" ".join(line.split()) for line in block.split("\n")] for block in blocks]
    # A paragraph repeated across documents (a translator's credit, a license notice) would be
    # both "same" and "different"; only paragraphs unique to one document are kept.
    in_documents = collections.Counter(p for d in documents for p in set(d))
    return [[p for p in d if in_documents[p] == 1 and MIN_WORDS <= len(p.split()) <= max_words]
            for d in documents]


def build(corpus: str, out_dir: str, *, examples: Sequence[int] = (2000, 300, 300),
          documents_share: Sequence[float] = (0.8, 0.1, 0.1), max_words: int = 60,
          seed: int = 0) -> dict[str, str]:
    """Writes `{train,dev,test}.tsv` to `out_dir`; returns {split: path}."""
    documents = read_documents(corpus, max_words)
    usable = [d for d in documents if len(d) >= 2]
    if len(usable) < 2 * len(SPLITS):
        raise FlaxlmError(f"{corpus}: {len(usable)} documents with two or more paragraphs of "
                          f"{MIN_WORDS}-{max_words} words; need at least {2 * len(SPLITS)} "
                          "(are documents separated by blank lines?)")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(usable))
    bounds = np.cumsum([0] + [round(s * len(usable)) for s in documents_share[:-1]])
    storage.makedirs(out_dir)
    paths = {}
    for index, split in enumerate(SPLITS):
        end = bounds[index + 1] if index + 1 < len(bounds) else len(usable)
        docs = [usable[i] for i in order[bounds[index]:end]]
        if len(docs) < 2:
            raise FlaxlmError(f"{corpus}: split {split} gets {len(docs)} document(s); change "
                              "documents_share")
        paths[split] = os.path.join(out_dir, f"{split}.tsv")
        _write(paths[split], _pairs(docs, examples[index], rng))
    return paths


def _pairs(docs: list[list[str]], count: int, rng: np.random.Generator) -> list[tuple]:
    rows = []
    for _ in range(count):
        doc = int(rng.integers(len(docs)))
        first, second = rng.choice(len(docs[doc]), 2, replace=False)
        if rng.random() < 0.5:
            rows.append((docs[doc][first], docs[doc][second], SAME))
        else:
            other = (doc + 1 + int(rng.integers(len(docs) - 1))) % len(docs)
            rows.append(
                (docs[doc][first], docs[other][int(rng.integers(len(docs[other])))], DIFFERENT))
    return rows


def _write(path: str, rows: list[tuple]) -> None:
    storage.write_text(path,
                       "text\ttext_pair\tlabel\n" + "".join("\t".join(row) + "\n" for row in rows))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpus")
    parser.add_argument("out_dir")
    parser.add_argument("--examples", default="2000,300,300", help="train,dev,test counts")
    parser.add_argument("--max-words", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.examples.split(",")]
    for split, path in build(args.corpus, args.out_dir, examples=counts, max_words=args.max_words,
                             seed=args.seed).items():
        print(f"{split}: {path}")


if __name__ == "__main__":
    main()

"""Document frequency of every token: in how many documents of a corpus it occurs.

One streaming pass through tf.data whose memory is a few vectors of vocabulary size, however
large the corpus (a Wikipedia dump is read document by document). `shard=(i, n)` counts every
n-th document from the i-th, so n hosts can each count a share into a `.npz` file that `merge`
adds up; the counts are only valid with the tokenizer they were made with (its fingerprint is
saved and checked).
"""

from __future__ import annotations

import dataclasses
import io
import json
import time
from collections.abc import Sequence

import numpy as np

from flaxlm import storage
from flaxlm.data import sources
from flaxlm.data.tokenizers import Tokenizer
from flaxlm.errors import FlaxlmError
from flaxlm.vocab.vocabulary import Vocabulary

# Documents tokenized together: SentencePiece encodes a batch on all cores.
BATCH_DOCUMENTS = 64


@dataclasses.dataclass
class DocFreq:
    fingerprint: str  # of the tokenizer that made the counts
    num_docs: int
    docs_V: np.ndarray  # int64: documents holding token id v
    # int64, indexed by group id (`Vocabulary.group_ids(uncase=True)`): documents holding any
    # case variant of the group (a document with "Roma" counts for "▁roma")
    docs_uncased_V: np.ndarray
    tokens_V: np.ndarray  # int64: occurrences of token id v
    chars: str  # every character seen, once
    seconds: float

    @property
    def docs_per_second(self) -> float:
        return self.num_docs / max(self.seconds, 1e-9)

    def save(self, path: str) -> None:
        meta = {
            "fingerprint": self.fingerprint,
            "num_docs": self.num_docs,
            "chars": self.chars,
            "seconds": self.seconds
        }
        buffer = io.BytesIO()
        np.savez(buffer, docs_V=self.docs_V, docs_uncased_V=self.docs_uncased_V,
                 tokens_V=self.tokens_V, meta=np.array(json.dumps(meta)))
        storage.write_bytes(path, buffer.getvalue())


def load(path: str) -> DocFreq:
    try:
        with storage.open_file(path, "rb") as f, np.load(f, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return DocFreq(meta["fingerprint"], int(meta["num_docs"]), z["docs_V"],
                           z["docs_uncased_V"], z["tokens_V"], meta["chars"], meta["seconds"])
    except (OSError, ValueError, KeyError) as e:
        raise FlaxlmError(f"{path}: not a document-frequency file written by flaxlm doc-freq "
                          f"({e})") from None


def merge(counts: Sequence[DocFreq], paths: Sequence[str], vocab: Vocabulary) -> DocFreq:
    """The counts of all shards (their seconds add up, as if one host had counted)."""
    for c, path in zip(counts, paths):
        if c.fingerprint != vocab.fingerprint or c.docs_V.shape != (vocab.size, ):
            raise FlaxlmError(f"{path}: counted with another tokenizer than the model's; count "
                              "again with this --model")
    return DocFreq(vocab.fingerprint, sum(c.num_docs for c in counts),
                   sum(c.docs_V for c in counts), sum(c.docs_uncased_V for c in counts),
                   sum(c.tokens_V for c in counts),
                   "".join(sorted(set().union(*(c.chars for c in counts)))),
                   sum(c.seconds for c in counts))


def _documents(specs: Sequence[str], shard: tuple[int, int], errors: list[FlaxlmError],
               text_field: str):
    """Batches of documents (paragraphs joined by newlines) of this shard. A FlaxlmError of the
    reader (an empty file) lands in `errors`: raised inside tf.data it would lose its type.

    With at least as many units (files, Parquet row groups) as shards, a host reads only its own
    units (`sources.iter_documents(shard=)`); with fewer, every host reads the whole corpus and
    keeps every N-th document."""
    import tensorflow as tf

    index, count = shard
    by_unit = count > 1 and sources.num_units(specs) >= count

    def texts():
        try:
            for paragraphs in sources.iter_documents(specs, text_field, shard if by_unit else
                                                     (0, 1)):
                yield "\n".join(paragraphs)
        except FlaxlmError as e:
            errors.append(e)

    ds = tf.data.Dataset.from_generator(texts, output_signature=tf.TensorSpec([], tf.string))
    if not by_unit:
        ds = ds.shard(count, index)
    return ds.batch(BATCH_DOCUMENTS).prefetch(2)


def count(specs: Sequence[str], tok: Tokenizer, vocab: Vocabulary, shard: tuple[int, int] = (0, 1),
          text_field: str = "text") -> DocFreq:
    """Counts over the documents of `specs` (corpus files or `tfds:NAME`) in this shard."""
    index, num_shards = shard
    if not 0 <= index < num_shards:
        raise FlaxlmError(f"--shard {index}/{num_shards}: expected I/N with 0 <= I < N")
    sources.iter_documents(
        specs, text_field)  # a bad path or file fails here, before tf.data wraps the error
    size = vocab.size
    group_V = vocab.group_ids(uncase=True)
    docs_V = np.zeros(size, np.int64)
    docs_uncased_V = np.zeros(size, np.int64)
    tokens_V = np.zeros(size, np.int64)
    chars: set[str] = set()
    num_docs = 0
    errors: list[FlaxlmError] = []
    documents = _documents(specs, shard, errors, text_field)
    start = time.perf_counter()
    for batch in documents.as_numpy_iterator():
        docs = [b.decode("utf-8") for b in batch]
        paragraphs, doc_of_paragraph = [], []
        for d, text in enumerate(docs):
            chars.update(text)
            for p in text.split("\n"):
                paragraphs.append(p)
                doc_of_paragraph.append(d)
        encoded = tok.encode_batch(paragraphs)
        ids_N = np.concatenate([ids for ids, _ in encoded] + [np.zeros(0, np.int32)])
        doc_N = np.repeat(np.asarray(doc_of_paragraph, np.int64), [len(ids) for ids, _ in encoded])
        # One (document, token) pair per occurrence; unique pairs count documents.
        for key_N, out_V in ((ids_N, docs_V), (group_V[ids_N], docs_uncased_V)):
            pairs = np.unique(doc_N * size + key_N)
            out_V += np.bincount(pairs % size, minlength=size)
        tokens_V += np.bincount(ids_N, minlength=size)
        num_docs += len(docs)
    if errors:
        raise errors[0]
    chars.discard("\n")
    return DocFreq(vocab.fingerprint, num_docs, docs_V, docs_uncased_V, tokens_V,
                   "".join(sorted(chars)),
                   time.perf_counter() - start)

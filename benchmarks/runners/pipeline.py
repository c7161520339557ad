"""Input pipeline: flaxlm's tf.data whole-word masking vs transformers' WWM collator, and the
train step fed by the real pipeline vs by an in-memory synthetic batch."""

from __future__ import annotations

import itertools
import time

import numpy as np

from benchmarks.runners.flaxlm_step import program_for
from benchmarks.runners.shared import corpus_and_tokenizer


class PipelineThroughput:
    """Masked batches/s from the same text, batch and length, tokenizer work done up front.

    flaxlm: `build_train_stream` over the corpus (tokenized and packed at build time, untimed);
    timed: `next()` on the stream (dynamic WWM in the tf.data graph, batching, prefetch).
    transformers: the same tokenizer through `AutoTokenizer`, lines tokenized with offsets and
    packed like flaxlm packs (run_mlm's `group_texts`: concatenate, cut into `<s> chunk </s>`),
    so both sides fill every row with real tokens (untimed); timed:
    `DataCollatorForLanguageModeling(whole_word_mask=True)` on lists of those examples, which in
    transformers 5 replaces `DataCollatorForWholeWordMask`.
    """
    def __init__(self, spec: dict):
        import transformers
        from transformers import AutoTokenizer, DataCollatorForLanguageModeling

        from flaxlm.data.pipeline import DataConfig, build_train_stream
        from flaxlm.data.tokenizers import load_tokenizer

        self.B, self.L = spec["batch"], spec["seq"]
        corpus, tok_dir = corpus_and_tokenizer(spec)
        t = time.perf_counter()
        cfg = DataConfig(train_files=(corpus, ), tokenizer=tok_dir, seq_len=self.L)
        self.stream = build_train_stream(cfg, load_tokenizer(tok_dir), seed=0,
                                         host_batch_size=self.B)
        for _ in range(5):
            next(self.stream)
        flaxlm_setup = time.perf_counter() - t

        t = time.perf_counter()
        hf_tok = AutoTokenizer.from_pretrained(tok_dir)
        with open(corpus, encoding="utf-8") as f:
            lines = [line for line in f.read().split("\n") if line.strip()]
        self.examples = _hf_packed_examples(hf_tok, lines, self.L)
        self.collators = {
            rt: DataCollatorForLanguageModeling(hf_tok, mlm=True, whole_word_mask=True,
                                                mlm_probability=0.15, return_tensors=rt, seed=0)
            for rt in ("pt", "np")
        }
        self.hf_batches = itertools.cycle(range(len(self.examples) // self.B))
        for rt in self.collators:
            self._hf_batch(rt)
        self.info = {
            "flaxlm_setup_s": flaxlm_setup,
            "hf_setup_s": time.perf_counter() - t,
            "hf_examples": len(self.examples),
            "transformers": transformers.__version__,
            "hf_tokenizer": type(hf_tok).__name__,
            "hf_fast": hf_tok.is_fast,
            "hf_real_token_share": float(
                np.mean([np.mean(e["attention_mask"]) for e in self.examples]))
        }

    def _hf_batch(self, return_tensors: str):
        i = next(self.hf_batches)
        return self.collators[return_tensors](self.examples[i * self.B:(i + 1) * self.B])

    def run(self, n: int) -> dict:
        """Seconds for n batches from each producer (one after the other)."""
        out = {}
        t = time.perf_counter()
        for _ in range(n):
            next(self.stream)
        out["flaxlm"] = time.perf_counter() - t
        for rt in self.collators:
            t = time.perf_counter()
            for _ in range(n):
                self._hf_batch(rt)
            out[f"hf_{rt}"] = time.perf_counter() - t
        out["n"] = n
        return out


class PipelineStep:
    """The flaxlm train step fed like train.py feeds it, from the real stream or from memory.

    The loop dispatches step t, then waits for step t-1's metrics (train.py's one-step-late
    fetch), so the next batch is produced while the device computes. Per-step time = interval
    between consecutive step completions.
    """
    def __init__(self, spec: dict):
        import jax

        from flaxlm.data.pipeline import DataConfig, build_train_stream
        from flaxlm.data.tokenizers import load_tokenizer
        from flaxlm.sharding import host_batch_to_global

        self.to_global = host_batch_to_global
        self.program, self.mesh, _, batch_fn = program_for(spec)
        corpus, tok_dir = corpus_and_tokenizer(spec)
        tokenizer = load_tokenizer(tok_dir)
        if tokenizer.vocab_size > spec["vocab"]:
            raise ValueError(f"tokenizer vocabulary {tokenizer.vocab_size} > model {spec['vocab']}")
        cfg = DataConfig(train_files=(corpus, ), tokenizer=tok_dir, seq_len=spec["seq"])
        self.sources = {
            "real": build_train_stream(cfg, tokenizer, seed=0, host_batch_size=spec["batch"]),
            "synthetic": itertools.repeat(batch_fn(np.random.default_rng(0))),
        }
        self.state = self.program.init_state(jax.random.key_data(jax.random.key(0)))
        for name in self.sources:
            self.run(max(1, spec["warmup"]), name)
        self.info = {}

    def run(self, n: int, source: str) -> dict:
        stream = self.sources[source]
        done, pending = [], None
        for _ in range(n + 1):
            self.state, metrics = self.program.train_step(self.state,
                                                          self.to_global(self.mesh, next(stream)))
            if pending is not None:
                pending["loss"].block_until_ready()
                done.append(time.perf_counter())
            pending = metrics
        pending["loss"].block_until_ready()
        done.append(time.perf_counter())
        return {"times": list(np.diff(done))}


def _hf_packed_examples(hf_tok, lines: list[str], seq: int) -> list[dict]:
    """Full rows of `seq` tokens with the offsets and special-token masks WWM needs."""
    enc = hf_tok(lines, add_special_tokens=False, return_offsets_mapping=True)
    ids = [i for row in enc["input_ids"] for i in row]
    offsets = [o for row in enc["offset_mapping"] for o in row]
    body = seq - 2
    examples = []
    for start in range(0, len(ids) - body + 1, body):
        examples.append({
            "input_ids": [hf_tok.cls_token_id, *ids[start:start + body], hf_tok.sep_token_id],
            "attention_mask": [1] * seq,
            "special_tokens_mask": [1] + [0] * body + [1],
            "offset_mapping": [(0, 0), *offsets[start:start + body], (0, 0)],
        })
    return examples


def build(spec: dict):
    return PipelineThroughput(spec) if spec["kind"] == "pipeline" else PipelineStep(spec)

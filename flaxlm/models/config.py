"""Model shapes: one frozen dataclass and the named presets that carry real architectures."""

from __future__ import annotations

import dataclasses
from typing import Literal

from flaxlm.errors import FlaxlmError, check_choice

# "bert": absolute positions 0..L-1 (BERT, mBERT, DistilBERT, ELECTRA).
# "xlmr": positions count non-padding tokens starting at pad_token_id + 1, so padding never moves
# the positions of real tokens (XLM-R, RoBERTa, mMiniLMv2).
# "distilbert": BERT's layers and MLM head without token types or pooler (DistilBERT).
# "electra": BERT's post-LN body (with `embedding_size` ≠ hidden: a projection), exported as
# transformers' Electra* classes.
Arch = Literal["bert", "xlmr", "distilbert", "electra"]
ARCHS: tuple[str, ...] = ("bert", "xlmr", "distilbert", "electra")
ATTENTIONS: tuple[str, ...] = ("xla", "dot_product", "splash")
REMATS: tuple[str, ...] = ("none", "full", "dots_saveable")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    arch: Arch
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int  # 0: no token-type embedding (DistilBERT)
    pad_token_id: int
    layer_norm_eps: float
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    head_dim: int = 0  # 0: hidden_size // num_heads
    # 0: hidden_size. Otherwise the embeddings have this width and a dense layer projects them to
    # hidden_size before the first layer (ELECTRA's `embeddings_project`).
    embedding_size: int = 0
    # BERT's pooler (dense + tanh on the first token). MLM never computes it; it is kept so that
    # checkpoints that have one round-trip, and BERT sequence classification needs it.
    pooler: bool = False
    num_labels: int = 2  # classifier heads only
    classifier_dropout: float = 0.1  # classifier heads only
    # How attention is computed (flaxlm/models/attention.py): "xla" materializes the LxL scores;
    # "dot_product" (jax.nn.dot_product_attention) and "splash" (Pallas, TPU) are fused. All give
    # the same function, so a checkpoint does not depend on it.
    attention: str = "xla"
    # Rematerialization per layer in the backward pass: "none" keeps every activation; "full"
    # keeps only each layer's input and recomputes the rest; "dots_saveable" keeps the outputs of
    # the projection and MLP matmuls and recomputes attention scores and elementwise work
    # (jax.checkpoint_policies.dots_with_no_batch_dims_saveable).
    remat: str = "none"

    @property
    def dim_per_head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads

    @property
    def embedding_dim(self) -> int:
        return self.embedding_size or self.hidden_size

    @property
    def max_seq_len(self) -> int:
        """Longest sequence the position table can hold."""
        if self.arch == "xlmr":
            return self.max_position_embeddings - self.pad_token_id - 1
        return self.max_position_embeddings

    def validate(self) -> None:
        positive = ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                    "max_position_embeddings", "num_labels")
        for name in positive:
            if getattr(self, name) <= 0:
                raise FlaxlmError(f"model.{name} must be positive, got {getattr(self, name)}")
        for name in ("type_vocab_size", "embedding_size"):
            if getattr(self, name) < 0:
                raise FlaxlmError(f"model.{name} must be 0 or positive, got {getattr(self, name)}")
        check_choice("model.arch", self.arch, ARCHS)
        if self.arch == "distilbert" and (self.type_vocab_size or self.pooler):
            raise FlaxlmError("model.arch='distilbert' has no token types and no pooler: set "
                              "model.type_vocab_size=0 and model.pooler=False")
        if not isinstance(self.pooler, bool):
            raise FlaxlmError(f"model.pooler must be true or false, got {self.pooler!r}")
        if not self.head_dim and self.hidden_size % self.num_heads:
            raise FlaxlmError(
                f"model.hidden_size={self.hidden_size} is not divisible by model.num_heads="
                f"{self.num_heads}; set model.head_dim explicitly")
        check_choice("model.attention", self.attention, ATTENTIONS)
        check_choice("model.remat", self.remat, REMATS)
        for name in ("hidden_dropout", "attention_dropout", "classifier_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise FlaxlmError(f"model.{name} must be in [0, 1), got {getattr(self, name)}")


_XLMR_VOCAB = 250_002

PRESETS: dict[str, ModelConfig] = {
    # mMiniLMv2 L6xH384 (the FLARE starting point) and its 12-layer sibling.
    "minilm-l6-h384": ModelConfig(arch="xlmr", vocab_size=_XLMR_VOCAB, hidden_size=384,
                                  num_layers=6, num_heads=12, intermediate_size=1536,
                                  max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
                                  layer_norm_eps=1e-5),
    "minilm-l12-h384": ModelConfig(arch="xlmr", vocab_size=_XLMR_VOCAB, hidden_size=384,
                                   num_layers=12, num_heads=12, intermediate_size=1536,
                                   max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
                                   layer_norm_eps=1e-5),
    "xlmr-base": ModelConfig(arch="xlmr", vocab_size=_XLMR_VOCAB, hidden_size=768, num_layers=12,
                             num_heads=12, intermediate_size=3072, max_position_embeddings=514,
                             type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5),
    # The mMiniLMv2 teacher: a size that does not fit one small chip without fsdp.
    "xlmr-large": ModelConfig(arch="xlmr", vocab_size=_XLMR_VOCAB, hidden_size=1024, num_layers=24,
                              num_heads=16, intermediate_size=4096, max_position_embeddings=514,
                              type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5),
    "bert-base-multilingual": ModelConfig(arch="bert", vocab_size=119_547, hidden_size=768,
                                          num_layers=12, num_heads=12, intermediate_size=3072,
                                          max_position_embeddings=512, type_vocab_size=2,
                                          pad_token_id=0, layer_norm_eps=1e-12),
    # SELECTRA discriminators (recognai/selectra `convert_to_hftransformers/config_{small,medium}.json`,
    # `electra/util/training_utils.get_bert_config`): 12 layers, embedding = hidden, heads =
    # hidden // 64, FFN 4 × hidden, 50,000 cased WordPiece entries, BERT positions and types.
    "selectra-small": ModelConfig(arch="bert", vocab_size=50_000, hidden_size=256, num_layers=12,
                                  num_heads=4, intermediate_size=1024, max_position_embeddings=512,
                                  type_vocab_size=2, pad_token_id=0, layer_norm_eps=1e-12,
                                  embedding_size=256),
    "selectra-medium": ModelConfig(arch="bert", vocab_size=50_000, hidden_size=384, num_layers=12,
                                   num_heads=6, intermediate_size=1536, max_position_embeddings=512,
                                   type_vocab_size=2, pad_token_id=0, layer_norm_eps=1e-12,
                                   embedding_size=384),
    # An ELECTRA discriminator for CPU runs (configs/electra_tiny.py).
    "electra-tiny": ModelConfig(arch="bert", vocab_size=1000, hidden_size=128, num_layers=2,
                                num_heads=2, intermediate_size=512, max_position_embeddings=128,
                                type_vocab_size=2, pad_token_id=0, layer_norm_eps=1e-12,
                                embedding_size=128),
    # DistilmBERT: the 6-layer student of bert-base-multilingual (DistilBERT has no token types).
    "distilbert-base-multilingual": ModelConfig(arch="distilbert", vocab_size=119_547,
                                                hidden_size=768, num_layers=6, num_heads=12,
                                                intermediate_size=3072, max_position_embeddings=512,
                                                type_vocab_size=0, pad_token_id=0,
                                                layer_norm_eps=1e-12),
    # CPU tests and smoke runs; vocab_size is normally replaced by the tokenizer's.
    "tiny": ModelConfig(arch="xlmr", vocab_size=1000, hidden_size=64, num_layers=2, num_heads=4,
                        intermediate_size=128, max_position_embeddings=258, type_vocab_size=1,
                        pad_token_id=1, layer_norm_eps=1e-5),
}


def preset(name: str, **overrides) -> ModelConfig:
    """A preset with some fields replaced; unknown names and fields are user errors."""
    if name not in PRESETS:
        raise FlaxlmError(f"unknown model preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise FlaxlmError(f"unknown model field(s) {unknown}; known: {sorted(fields)}")
    config = dataclasses.replace(PRESETS[name], **overrides)
    config.validate()
    return config

"""Task heads on the encoder: masked LM (tied to the input embeddings), token and sequence
classification. Every model maps a batch to fp32 logits and exposes `head_logits(x_BxLxD)`, the
deterministic head over every position that parity checks compare with transformers.

Batch keys read: `input_ids`, `attention_mask`, `token_type_ids` (ignored without a token-type
embedding; may be absent then), and for MLM `masked_positions`.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from flaxlm.errors import FlaxlmError
from flaxlm.models.config import ModelConfig
from flaxlm.models.encoder import Encoder
from flaxlm.models.layers import DenseGeneral, LayerNorm, dropout, gelu, param
from flaxlm.sharding import constrain


def gather_positions(x_BxLxD: jax.Array, positions_BxM: jax.Array) -> jax.Array:
    return jnp.take_along_axis(x_BxLxD, positions_BxM[..., None], axis=1)


def _encode(encoder: Encoder, batch: Mapping[str, jax.Array], dtype, dropout_key):
    return encoder(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"),
                   dtype=dtype, dropout_key=dropout_key)


def _split(key: jax.Array | None) -> tuple[jax.Array | None, jax.Array | None]:
    """(encoder key, head key), or no keys when deterministic."""
    return (None, None) if key is None else tuple(jax.random.split(key))


class MaskedLMHead(nnx.Module):
    """dense D→E → GELU → LayerNorm → tied projection onto the word embeddings + bias."""
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        d, e = config.hidden_size, config.embedding_dim
        self.transform = DenseGeneral((d, ), (e, ), ("embed", ), ("act_embed", ), rngs=rngs)
        self.norm = LayerNorm(e, config.layer_norm_eps)
        self.bias = param(jnp.zeros((config.vocab_size, ), jnp.float32), ("vocab", ))

    def __call__(self, h_BxMxD: jax.Array, word_embeddings) -> jax.Array:
        """fp32 logits whatever the compute dtype (see `Embed.attend`)."""
        h_BxMxE = self.norm(gelu(self.transform(h_BxMxD)))
        logits_BxMxV = word_embeddings.attend(h_BxMxE) + self.bias[...]
        return constrain(logits_BxMxV, ("batch", "predictions", "vocab"))


class MaskedLMModel(nnx.Module):
    """Encoder + MLM head; vocabulary logits are computed only at the masked positions.

    Projecting every position onto a 250k vocabulary would cost several times the whole MiniLM
    body, so the hidden states are gathered at `masked_positions` first.
    """
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.encoder = Encoder(config, rngs=rngs)
        self.mlm_head = MaskedLMHead(config, rngs=rngs)

    def __call__(self, batch: Mapping[str, jax.Array], *, dtype=jnp.float32,
                 dropout_key: jax.Array | None = None) -> jax.Array:
        """`logits_BxMxV` (fp32) at `batch["masked_positions"]`."""
        return self.prediction_logits(
            self.masked_hidden(batch, dtype=dtype, dropout_key=dropout_key))

    def masked_hidden(self, batch: Mapping[str, jax.Array], *, dtype=jnp.float32,
                      dropout_key: jax.Array | None = None) -> jax.Array:
        """The encoder's `h_BxMxD` at `batch["masked_positions"]`, before the head."""
        x_BxLxD = _encode(self.encoder, batch, dtype, dropout_key)
        return gather_positions(x_BxLxD, batch["masked_positions"])

    def prediction_logits(self, h_xD: jax.Array) -> jax.Array:
        """fp32 vocabulary logits `…×V` of hidden states `…×D` at prediction slots."""
        return self.mlm_head(h_xD, self.encoder.embeddings.word)

    def head_logits(self, x_BxLxD: jax.Array) -> jax.Array:
        return self.mlm_head(x_BxLxD, self.encoder.embeddings.word)

    def all_position_logits(self, input_ids_BxL, attention_mask_BxL, token_type_ids_BxL):
        """Logits at every position, for fill-mask and parity checks (not for training)."""
        return self.head_logits(self.encoder(input_ids_BxL, attention_mask_BxL, token_type_ids_BxL))


class TokenClassifierModel(nnx.Module):
    """Encoder → dropout → dense D→C at every position (`*ForTokenClassification`)."""
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.encoder = Encoder(config, rngs=rngs)
        self.classifier = DenseGeneral((config.hidden_size, ), (config.num_labels, ), ("embed", ),
                                       ("labels", ), rngs=rngs)

    def __call__(self, batch: Mapping[str, jax.Array], *, dtype=jnp.float32,
                 dropout_key: jax.Array | None = None) -> jax.Array:
        """`logits_BxLxC` (fp32) at every position; the loss decides which positions count."""
        encoder_key, head_key = _split(dropout_key)
        x_BxLxD = _encode(self.encoder, batch, dtype, encoder_key)
        x_BxLxD = dropout(x_BxLxD, self.config.classifier_dropout, head_key)
        return self.classifier(x_BxLxD).astype(jnp.float32)

    def head_logits(self, x_BxLxD: jax.Array) -> jax.Array:
        return self.classifier(x_BxLxD).astype(jnp.float32)


class PooledClassifier(nnx.Module):
    """BERT: the encoder's pooler → dropout → dense D→C (`BertForSequenceClassification`)."""
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        if not config.pooler:  # a run's model passed `config_for_head`, which adds it
            raise FlaxlmError(f"{config.arch} sequence classification classifies the pooled "
                              "output: the model needs model.pooler=True")
        self.rate = config.classifier_dropout
        self.classifier = DenseGeneral((config.hidden_size, ), (config.num_labels, ), ("embed", ),
                                       ("labels", ), rngs=rngs)

    def __call__(self, x_BxLxD, encoder: Encoder, dropout_key) -> jax.Array:
        pooled_BxD = dropout(encoder.pooler(x_BxLxD), self.rate, dropout_key)
        return self.classifier(pooled_BxD)


class FirstTokenClassifier(nnx.Module):
    """XLM-R / RoBERTa: first token → dropout → dense D→D → tanh → dropout → dense D→C
    (`XLMRobertaClassificationHead`; the encoder's pooler, if any, is not used)."""
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        d = config.hidden_size
        self.rate = config.classifier_dropout
        self.dense = DenseGeneral((d, ), (d, ), ("embed", ), ("act_embed", ), rngs=rngs)
        self.out = DenseGeneral((d, ), (config.num_labels, ), ("embed", ), ("labels", ), rngs=rngs)

    def __call__(self, x_BxLxD, encoder: Encoder, dropout_key) -> jax.Array:
        del encoder
        keys = (None, None) if dropout_key is None else jax.random.split(dropout_key)
        h_BxD = jnp.tanh(self.dense(dropout(x_BxLxD[:, 0], self.rate, keys[0])))
        return self.out(dropout(h_BxD, self.rate, keys[1]))


# The sequence-classification head each family's transformers class has: one row per family.
SEQUENCE_HEADS: dict[str, type[nnx.Module]] = {
    "bert": PooledClassifier,
    "xlmr": FirstTokenClassifier
}


class GeluFirstTokenClassifier(nnx.Module):
    """ELECTRA: first token → dropout → dense D→D → GELU → dropout → dense D→C
    (`ElectraClassificationHead`: XLM-R's head with GELU for tanh)."""
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        d = config.hidden_size
        self.rate = config.classifier_dropout
        self.dense = DenseGeneral((d, ), (d, ), ("embed", ), ("act_embed", ), rngs=rngs)
        self.out = DenseGeneral((d, ), (config.num_labels, ), ("embed", ), ("labels", ), rngs=rngs)

    def __call__(self, x_BxLxD, encoder: Encoder, dropout_key) -> jax.Array:
        del encoder
        keys = (None, None) if dropout_key is None else jax.random.split(dropout_key)
        h_BxD = gelu(self.dense(dropout(x_BxLxD[:, 0], self.rate, keys[0])))
        return self.out(dropout(h_BxD, self.rate, keys[1]))


SEQUENCE_HEADS["electra"] = GeluFirstTokenClassifier


class ReluFirstTokenClassifier(nnx.Module):
    """DistilBERT: first token → dense D→D → ReLU → dropout → dense D→C
    (`DistilBertForSequenceClassification`'s `pre_classifier` and `classifier`)."""
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        d = config.hidden_size
        self.rate = config.classifier_dropout
        self.pre_classifier = DenseGeneral((d, ), (d, ), ("embed", ), ("act_embed", ), rngs=rngs)
        self.classifier = DenseGeneral((d, ), (config.num_labels, ), ("embed", ), ("labels", ),
                                       rngs=rngs)

    def __call__(self, x_BxLxD, encoder: Encoder, dropout_key) -> jax.Array:
        del encoder
        h_BxD = jax.nn.relu(self.pre_classifier(x_BxLxD[:, 0]))
        return self.classifier(dropout(h_BxD, self.rate, dropout_key))


SEQUENCE_HEADS["distilbert"] = ReluFirstTokenClassifier


class SequenceClassifierModel(nnx.Module):
    """Encoder → the family's sequence head on the first token (`*ForSequenceClassification`)."""
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.encoder = Encoder(config, rngs=rngs)
        self.classifier = SEQUENCE_HEADS[config.arch](config, rngs=rngs)

    def __call__(self, batch: Mapping[str, jax.Array], *, dtype=jnp.float32,
                 dropout_key: jax.Array | None = None) -> jax.Array:
        """`logits_BxC` (fp32), one row per sequence."""
        encoder_key, head_key = _split(dropout_key)
        x_BxLxD = _encode(self.encoder, batch, dtype, encoder_key)
        return self.classifier(x_BxLxD, self.encoder, head_key).astype(jnp.float32)

    def head_logits(self, x_BxLxD: jax.Array) -> jax.Array:
        return self.classifier(x_BxLxD, self.encoder, None).astype(jnp.float32)


def config_for_head(head: str, config: ModelConfig) -> ModelConfig:
    """`config` with the encoder parts `head` computes from. A BERT sequence head classifies the
    pooled output, so a model without a pooler gets one, which starts fresh: what
    `BertForSequenceClassification.from_pretrained` does with a release saved without one
    (multilingual-e5-small, any `BertForMaskedLM`), and what export writes back as `bert.pooler`."""
    if (head == "sequence_classification" and SEQUENCE_HEADS.get(config.arch) is PooledClassifier
            and not config.pooler):
        return dataclasses.replace(config, pooler=True)
    return config


# flaxlm's head names (a workdir's `head`), each with the model class that carries it.
MODELS: dict[str, type[nnx.Module]] = {
    "mlm": MaskedLMModel,
    "token_classification": TokenClassifierModel,
    "sequence_classification": SequenceClassifierModel,
}


def model_class(head: str) -> type[nnx.Module]:
    if head not in MODELS:
        raise FlaxlmError(f"unknown head {head!r}; known: {', '.join(MODELS)}")
    return MODELS[head]


def param_names(model: nnx.Module) -> list[str]:
    """Canonical `/`-joined parameter names, the keys that conversion tables map."""
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return ["/".join(str(p) for p in path) for path, _ in flat]


def logical_axes(state: nnx.State):
    """A tree matching `state` whose leaves are the logical axis tuples of each parameter."""
    return jax.tree.map(lambda v: v.get_metadata()["logical_axes"], state,
                        is_leaf=lambda x: isinstance(x, nnx.Variable))

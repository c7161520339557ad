"""The ELECTRA family: BERT's body under `electra.` without a pooler, plus the E→D
`embeddings_project` when the embeddings are narrower than the hidden width. The flaxlm names are
an `Encoder`'s; `flaxlm.convert.electra` renames a pre-training run's towers into this view."""

from __future__ import annotations

from flaxlm.convert.mappings import bert
from flaxlm.convert.mappings.hf_fields import (check_heads_fill_hidden, label_fields,
                                               refuse_unsupported, POST_LN_ENCODER_SUPPORTS)
from flaxlm.convert.mappings.rules import LINEAR, TOKEN_HEAD, Family, Head, Rule, Task, mlm_head
from flaxlm.errors import FlaxlmError
from flaxlm.models.config import ModelConfig


def _projects(c: ModelConfig) -> bool:
    return c.embedding_dim != c.hidden_size


def body() -> tuple[Rule, ...]:
    no_pooler = tuple(r for r in bert.body("electra.") if not r.flax.startswith("encoder/pooler/"))
    return no_pooler + (Rule("encoder/embeddings_project/kernel",
                             "electra.embeddings_project.weight", LINEAR, when=_projects),
                        Rule("encoder/embeddings_project/bias", "electra.embeddings_project.bias",
                             when=_projects))


def write_config(config: ModelConfig, family: Family, task: str, hf_class: str,
                 labels: list[str] | None, bos_id: int | None, eos_id: int | None):
    """`ElectraConfig` of `hf_class` for one tower's (or encoder's) config."""
    import transformers  # seconds to import: only when a config is written

    check_heads_fill_hidden(config, hf_class)
    if config.type_vocab_size == 0:
        raise FlaxlmError(f"model.type_vocab_size=0: {hf_class} always adds a token-type "
                          "embedding")
    task_fields = {}
    if task not in ("mlm", "electra"):
        task_fields = {
            "num_labels": config.num_labels,
            "classifier_dropout": config.classifier_dropout,
            **label_fields(labels, config.num_labels)
        }
    return transformers.ElectraConfig(
        architectures=[hf_class], vocab_size=config.vocab_size, embedding_size=config.embedding_dim,
        hidden_size=config.hidden_size, num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads, intermediate_size=config.intermediate_size,
        hidden_act="gelu", hidden_dropout_prob=config.hidden_dropout,
        attention_probs_dropout_prob=config.attention_dropout,
        max_position_embeddings=config.max_position_embeddings,
        type_vocab_size=config.type_vocab_size, layer_norm_eps=config.layer_norm_eps,
        pad_token_id=config.pad_token_id, tie_word_embeddings=True, dtype="float32", **task_fields)


def read_config(hf, source: str, family: Family, task: str, hf_class: str) -> ModelConfig:
    """An `ElectraConfig` → the flaxlm config of that tower or encoder (arch "electra": BERT's
    post-LN body, exported back as Electra* classes); refuses what flaxlm does not compute."""
    refuse_unsupported(hf, POST_LN_ENCODER_SUPPORTS, source, "flaxlm's ELECTRA")
    hidden_dropout = float(hf.hidden_dropout_prob)
    config = ModelConfig(
        arch="electra", vocab_size=int(hf.vocab_size), hidden_size=int(hf.hidden_size),
        num_layers=int(hf.num_hidden_layers), num_heads=int(hf.num_attention_heads),
        intermediate_size=int(hf.intermediate_size), max_position_embeddings=int(
            hf.max_position_embeddings), type_vocab_size=int(hf.type_vocab_size),
        pad_token_id=int(hf.pad_token_id or 0), layer_norm_eps=float(hf.layer_norm_eps),
        hidden_dropout=hidden_dropout, attention_dropout=float(hf.attention_probs_dropout_prob),
        embedding_size=0 if hf.embedding_size == hf.hidden_size else int(hf.embedding_size),
        num_labels=int(hf.num_labels),
        classifier_dropout=(hidden_dropout
                            if hf.classifier_dropout is None else float(hf.classifier_dropout)))
    try:
        config.validate()
    except FlaxlmError as e:
        raise FlaxlmError(f"{source}: {e}") from None
    if config.hidden_size % config.num_heads:
        raise FlaxlmError(f"{source}: hidden_size={config.hidden_size} is not divisible by "
                          f"num_attention_heads={config.num_heads}")
    if config.type_vocab_size == 0:
        raise FlaxlmError(f"{source}: type_vocab_size=0, but ELECTRA always adds a token-type "
                          "embedding")
    return config


FAMILY = Family(arch="electra", model_type="electra", config_class="ElectraConfig",
                base_class="ElectraModel", prefix="electra.", body=body(),
                ignored=bert.index_buffers("electra."), read_config=read_config,
                write_config=write_config)
# The discriminator of an ELECTRA pre-training run (workdir head "electra").
TASKS = {"electra": Task("AutoModelForPreTraining", "feature-extraction", "discriminator_head/")}
HEADS: dict[tuple[str, str], Head] = {
    ("electra", "electra"): Head(
        "ElectraForPreTraining",
        (Rule("discriminator_head/dense/kernel", "discriminator_predictions.dense.weight", LINEAR),
         Rule("discriminator_head/dense/bias", "discriminator_predictions.dense.bias"),
         Rule("discriminator_head/prediction/kernel",
              "discriminator_predictions.dense_prediction.weight", LINEAR),
         Rule("discriminator_head/prediction/bias",
              "discriminator_predictions.dense_prediction.bias"))),
    # The generator of an ELECTRA pre-training run: its MLM head is tied to the shared word table.
    ("electra", "mlm"): Head(
        "ElectraForMaskedLM",
        mlm_head("generator_predictions.dense", "generator_predictions.LayerNorm",
                 "generator_lm_head.bias"),
        aliases={"generator_lm_head.weight": "electra.embeddings.word_embeddings.weight"}),
    ("electra", "token_classification"): Head("ElectraForTokenClassification", TOKEN_HEAD),
    ("electra", "sequence_classification"): Head("ElectraForSequenceClassification",
                                                 bert.DENSE_OUT_HEAD),
}

"""The ELECTRA family: BERT's body under `electra.` without a pooler, plus the E→D
`embeddings_project` when the embeddings are narrower than the hidden width. The flaxlm names are
an `Encoder`'s; `flaxlm.convert.electra` renames a pre-training run's towers into this view."""

from __future__ import annotations

from flaxlm.convert.mappings import bert
from flaxlm.convert.mappings.rules import LINEAR, TOKEN_HEAD, Family, Head, Rule, Task, mlm_head
from flaxlm.models.config import ModelConfig


def _projects(c: ModelConfig) -> bool:
    return c.embedding_dim != c.hidden_size


def body() -> tuple[Rule, ...]:
    no_pooler = tuple(r for r in bert.body("electra.") if not r.flax.startswith("encoder/pooler/"))
    return no_pooler + (
        Rule("encoder/embeddings_project/kernel", "electra.embeddings_project.weight", LINEAR,
             when=_projects),
        Rule("encoder/embeddings_project/bias", "electra.embeddings_project.bias", when=_projects))


FAMILY = Family(
    arch="electra", model_type="electra", config_class="ElectraConfig", base_class="ElectraModel",
    prefix="electra.", body=body(), ignored=bert.index_buffers("electra."))
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

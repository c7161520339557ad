"""Conversion tables: a body table per model family × a head table per task, each row
flaxlm name ↔ HF name + a per-tensor hook.

A row is `Rule(flax, hf, hook, when)`; `{i}` stands for the layer index and `when` limits a row to
the configs that have the tensor (pooler, token types, embedding projection). Hooks are exact
(transposes and reshapes only), so HF → flaxlm → HF gives back every fp32 tensor bit for bit.
A transformers class is a (family, task) pair: adding a family is one module here (`bert.py`
holds BERT and XLM-R, `distilbert.py`, `electra.py`: its `Family` and its `HEADS` rows), listed in
`tables.py`; the family's module also holds its config.json ↔ `ModelConfig` translation
(`read_config` / `write_config`, on its `Family`). Adding a task is one `TASKS` row in `tables.py`,
its `HEADS` rows and a model in `flaxlm/models/heads.py`.

`rules.py` defines rows and hooks, `tables.py` assembles the tables and looks them up,
`tensors.py` applies them, `hf_fields.py` reads and writes transformers config fields. Import
from the module that defines a name: this package re-exports nothing.
"""

"""`flaxlm export` / `flaxlm import` of an ELECTRA pre-training pair.

Export writes the discriminator (`ElectraForPreTraining`) at `OUT/` and the generator
(`ElectraForMaskedLM`) at `OUT/generator/`, each with the tokenizer, each loaded back through
transformers, checked tensor by tensor and for logit parity before `OUT` appears. Import reads
the same layout (or a generator directory given apart) into a workdir with head "electra".
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from flaxlm import storage

from flaxlm.convert.electra import (GENERATOR_SUBDIR, PARITY_MAX_LEN, TOWERS, build_pair,
                                    check_pair_parity, pair_from_hf, pair_to_hf, read_pair, tables,
                                    write_pair_workdir)
from flaxlm.convert.export import check_loaded_exactly, load_torch, save_safetensors, staged_dir
from flaxlm.convert.hf_config import read_model_config, transformers_config, write_hf_config
from flaxlm.convert.model_card import model_card
from flaxlm.convert.parity import TOLERANCE, parity_batch
from flaxlm.convert.safe_load import check_hf_dir, load_tensors
from flaxlm.convert.tokenizer_files import (check_rows, compare, import_tokenizer,
                                            write_release_tokenizer)
from flaxlm.data.tokenizers import load_tokenizer
from flaxlm.errors import FlaxlmError
from flaxlm.run.workdir import Workdir


def export_pair(workdir: str, out: str, *, step: int | None, overwrite: bool,
                tolerance: float = TOLERANCE) -> dict:
    discriminator, generator, flat, step = read_pair(workdir, step)
    wd = Workdir.open(workdir)
    tok = load_tokenizer(wd.tokenizer_dir)
    check_rows(tok.vocab_size, discriminator.vocab_size, workdir)
    configs = {"discriminator": discriminator, "generator": generator}
    tensors = pair_to_hf(discriminator, generator, flat)
    where = f"export of {workdir}"
    with staged_dir(out, overwrite=overwrite) as tmp:
        dirs = {"discriminator": tmp, "generator": os.path.join(tmp, GENERATOR_SUBDIR)}
        torch_models, hf_tok = {}, None
        for tower, table in tables().items():
            task = TOWERS[tower][2]
            os.makedirs(dirs[tower], exist_ok=True)
            weights = os.path.join(dirs[tower], "model.safetensors")
            save_safetensors(tensors[tower], weights)
            write_hf_config(table, configs[tower]).save_pretrained(dirs[tower])
            hf_tok = write_release_tokenizer(tok, dirs[tower], discriminator.max_seq_len)
            compare(tok, hf_tok, discriminator.vocab_size, where)
            torch_models[tower] = load_torch(dirs[tower], task)
            check_loaded_exactly(torch_models[tower], tensors[tower], table, [], weights,
                                 f"{where} ({tower})")
        batch = parity_batch(hf_tok, min(PARITY_MAX_LEN, discriminator.max_seq_len))
        parity = check_pair_parity(build_pair(discriminator, generator, flat), torch_models, batch,
                                   where=where, tolerance=tolerance)
        for tower, table in tables().items():
            name = os.path.basename(
                os.path.abspath(out)) + ("" if tower == "discriminator" else f"/{GENERATOR_SUBDIR}")
            card = model_card(
                name=name, hf_class=table.hf_class, task=TOWERS[tower][2], config=configs[tower],
                tokenizer=tok, params=sum(v.size for v in tensors[tower].values()), wd=wd,
                step=step, mask_token=hf_tok.mask_token, parity={
                    k: v
                    for k, v in parity.items() if k.startswith(tower) or not k.endswith("diff")
                })
            with open(os.path.join(dirs[tower], "README.md"), "w", encoding="utf-8") as f:
                f.write(card)
    return {
        "out": os.path.abspath(out),
        "step": step,
        "hf_class": "ElectraForPreTraining + generator/ElectraForMaskedLM",
        "params": sum(v.size for v in flat.values()),
        **parity
    }


def _torch_model(hf_class: str, hf_config, tensors):
    """The checkpoint in its transformers class, from the tensors already read safely."""
    import torch  # torch and transformers take seconds to import: only when a pair is built
    import transformers

    model = getattr(transformers, hf_class)(hf_config)
    model.load_state_dict({
        k: torch.from_numpy(np.array(v))
        for k, v in tensors.items()
    }, strict=False)
    model.tie_weights()
    return model.float().eval()


def import_pair(hf_dir: str, out: str, *, overwrite: bool, tolerance: float = TOLERANCE,
                tokenizer_dir: str | None = None, generator_dir: str | None = None) -> dict:
    """`hf_dir` holds `ElectraForPreTraining`; the generator is `generator_dir`, else
    `hf_dir/generator` (the layout export writes)."""
    dirs = {
        "discriminator": hf_dir,
        "generator": generator_dir or os.path.join(hf_dir, GENERATOR_SUBDIR)
    }
    if not os.path.isdir(dirs["generator"]):
        raise FlaxlmError(f"{hf_dir}: an ElectraForPreTraining import needs its generator "
                          f"(ElectraForMaskedLM) in {dirs['generator']}; flaxlm trains both")
    hf_configs, configs, tensors, where = {}, {}, {}, {}
    for tower, table in tables().items():
        where[tower] = os.path.join(dirs[tower], "config.json")
        raw = check_hf_dir(dirs[tower])
        if raw.get("model_type") != "electra" or raw.get("architectures") != [table.hf_class]:
            raise FlaxlmError(f"{where[tower]}: the ELECTRA {tower} must be model_type 'electra' "
                              f"with architectures ['{table.hf_class}'], got "
                              f"{raw.get('model_type')!r} {raw.get('architectures')!r}")
        hf_configs[tower] = transformers_config(table.family, raw, where[tower])
        configs[tower] = read_model_config(table, hf_configs[tower], where[tower])
        tensors[tower] = load_tensors(dirs[tower])
    discriminator, generator = configs["discriminator"], configs["generator"]
    for key in ("vocab_size", "max_position_embeddings", "type_vocab_size", "pad_token_id",
                "layer_norm_eps", "embedding_dim"):
        if getattr(discriminator, key) != getattr(generator, key):
            raise FlaxlmError(f"{where['generator']}: {key}={getattr(generator, key)} but the "
                              f"discriminator has {getattr(discriminator, key)}; the towers "
                              "share their embeddings")
    generator = dataclasses.replace(generator, embedding_size=discriminator.embedding_dim)
    flat = pair_from_hf(discriminator, generator, tensors, where)

    with staged_dir(out, overwrite=overwrite) as tmp:
        tok, hf_tok = import_tokenizer(tokenizer_dir or hf_dir,
                                       Workdir(tmp).own_tokenizer_dir, discriminator.arch,
                                       discriminator.vocab_size, discriminator.max_seq_len)
        batch = parity_batch(hf_tok, min(PARITY_MAX_LEN, discriminator.max_seq_len))
        torch_models = {
            tower: _torch_model(table.hf_class, hf_configs[tower], tensors[tower])
            for tower, table in tables().items()
        }
        parity = check_pair_parity(build_pair(discriminator, generator, flat), torch_models, batch,
                                   where=f"import of {hf_dir}", tolerance=tolerance)
        source = {
            "source": "hf-import",
            "hf_dir": storage.recorded_name(hf_dir),
            "generator_dir": storage.recorded_name(dirs["generator"]),
            "tokenizer_from": storage.recorded_name(tokenizer_dir or hf_dir),
            "hf_class": "ElectraForPreTraining",
            "initialized_fresh": [],
            "dropped": []
        }
        count = write_pair_workdir(tmp, discriminator, generator, flat, source)
    return {
        "out": os.path.abspath(out),
        "arch": "electra",
        "head": "electra",
        "params": count,
        "initialized_fresh": [],
        "dropped": [],
        "unused_rows": discriminator.vocab_size - tok.vocab_size,
        **parity
    }

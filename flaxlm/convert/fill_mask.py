"""`flaxlm fill-mask`: top-k predictions from a release bundle or a flaxlm workdir.

`flaxlm.convert.commands.fill_mask` exports a workdir to a temporary bundle first (with the usual
parity check), so the answer is what users of the released PyTorch model will see. Either may be
on `gs://`: a bundle there is read from a local copy (transformers reads local files only).
"""

from __future__ import annotations

import os
from typing import Sequence

from flaxlm import storage
from flaxlm.convert.electra import GENERATOR_SUBDIR
from flaxlm.convert.export import no_progress_bars
from flaxlm.convert.safe_load import check_hf_dir
from flaxlm.errors import FlaxlmError

MASK_PLACEHOLDER = "<mask>"


def fill_mask_demo(hf_dir: str, sentences: Sequence[str], top_k: int = 5) -> list:
    """`transformers.pipeline("fill-mask")` on `hf_dir`: per sentence, a list of
    `{"token_str", "score", "sequence", "token"}` (a list of such lists if a sentence has several
    masks). `<mask>` in a sentence is replaced by the model's own mask token."""
    import torch  # torch and transformers take seconds to import: only when predicting
    from transformers import pipeline

    check_hf_dir(hf_dir)
    with no_progress_bars():
        fill = pipeline("fill-mask", model=hf_dir, tokenizer=hf_dir, trust_remote_code=False,
                        dtype=torch.float32, device="cpu", top_k=top_k)
    mask = fill.tokenizer.mask_token
    out = []
    for sentence in sentences:
        text = sentence.replace(MASK_PLACEHOLDER, mask) if mask != MASK_PLACEHOLDER else sentence
        if mask not in text:
            raise FlaxlmError(f"{sentence!r}: no {mask} (or {MASK_PLACEHOLDER}) to fill")
        out.append(fill(text))
    return out


def masked_lm_dir(hf_dir: str) -> str:
    """`hf_dir`, or the generator of an ELECTRA bundle: the discriminator (`ElectraForPreTraining`)
    has no MLM head, so transformers' fill-mask pipeline would predict with a random one."""
    if check_hf_dir(hf_dir).get("architectures") != ["ElectraForPreTraining"]:
        return hf_dir
    generator = os.path.join(hf_dir, GENERATOR_SUBDIR)
    if not os.path.isfile(os.path.join(generator, "config.json")):
        raise FlaxlmError(f"{hf_dir}: an ELECTRA discriminator (ElectraForPreTraining) has no MLM "
                          f"head; fill-mask needs its generator (ElectraForMaskedLM), which "
                          f"`flaxlm export` writes to {generator}: pass that directory")
    return generator


def format_predictions(sentences: Sequence[str], results: list) -> str:
    lines = []
    for sentence, result in zip(sentences, results):
        lines.append(sentence)
        groups = result if result and isinstance(result[0], list) else [result]
        for i, group in enumerate(groups):
            prefix = f"  mask {i + 1}: " if len(groups) > 1 else "  "
            lines += [f"{prefix}{p['score']:.4f}  {p['token_str']!r}" for p in group]
    return "\n".join(lines)

"""An imported release without an MLM head gets a fresh one drawn in numpy; it must come from the
same distribution as the head flaxlm's own initializer builds, or a continued-MLM run from an
import would start from a different head scale than one from flaxlm's init."""

from __future__ import annotations

import numpy as np
from flax import nnx

from flaxlm.convert.model_io import fresh_head
from flaxlm.models.config import ModelConfig
from flaxlm.models.heads import MaskedLMHead


def test_fresh_head_matches_flaxlm_init_distribution():
    config = ModelConfig(arch="bert", vocab_size=50, hidden_size=256, num_layers=1, num_heads=4,
                         intermediate_size=64, max_position_embeddings=16, type_vocab_size=2,
                         pad_token_id=0, layer_norm_eps=1e-12)
    numpy_kernel = fresh_head(config)["mlm_head/transform/kernel"]
    flax_kernel = np.asarray(MaskedLMHead(config, rngs=nnx.Rngs(0)).transform.kernel[...])
    assert numpy_kernel.shape == flax_kernel.shape
    # 65,536 draws each: the stddev's sampling error is ~5e-5; the two cut normals a rescale
    # apart (0.0176 against 0.0200) differ by 2.4e-3.
    np.testing.assert_allclose(numpy_kernel.std(), flax_kernel.std(), rtol=0.02)
    np.testing.assert_allclose(np.abs(numpy_kernel).max(), np.abs(flax_kernel).max(), rtol=0.02)

"""Data layer: tokenizers, corpus sources, offline packing (prepare) and the tf.data MLM pipeline.

Import the submodules directly; this package stays empty so that `flaxlm.data.tokenizers` does not
pull in TensorFlow.
"""

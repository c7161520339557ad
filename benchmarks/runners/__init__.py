"""Runners: each builds one measured thing from a JSON spec and answers `run(n)` (protocol.py).

conll2002_torch.py is not one: it is the PyTorch side of benchmarks/conll2002_torch_vs_flaxlm.py.
"""

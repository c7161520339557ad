"""The trainer's parts: the objective protocol, the step program, checkpoints, the workdir, metrics.

Import the submodules directly; this package stays empty so that importing one part does not pull
in the others (tests/test_import_graph.py keeps the layers).
"""

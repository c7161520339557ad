"""`flaxlm export`, `flaxlm import` and `flaxlm fill-mask` (Hugging Face interop)."""


def add_parsers(sub) -> None:
    """Registers the conversion subcommands on the `flaxlm` parser."""

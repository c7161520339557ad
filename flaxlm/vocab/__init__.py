"""Vocabulary pruning and uncasing: a checkpoint transform, like `flaxlm import`.

`flaxlm prune-vocab` counts in how many documents of a corpus each token occurs (`doc_freq`),
chooses the tokens to keep (`selection`), writes the smaller tokenizer (`sentencepiece_prune`,
`wordpiece_prune`), re-indexes every tensor on the vocabulary axis (`reindex`) and reports what
changed (`report`); `prune` runs the whole of it into a new workdir. docs/vocab_pruning.md.
"""

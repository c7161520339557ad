"""Fine-tuning tasks: metrics, the finetune config section, k-fold and multi-seed runs
(`flaxlm finetune`), results.json, the cards' tables (`flaxlm evaluate`) and zero-shot."""

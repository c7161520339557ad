"""Fine-tuning tasks: metrics, and (coming) the k-fold and multi-seed drivers."""

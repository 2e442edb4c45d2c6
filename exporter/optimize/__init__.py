"""``tlx optimize``: variants (fold, fp16, int8) of a run's model, each gated by verify's gate."""

"""``tlx optimize``: variants (fold, fp16, int8) of a run's model, each gated by verify's gate."""

from exporter.optimize.optimize import OptimizeResult, optimize_run

__all__ = ["OptimizeResult", "optimize_run"]

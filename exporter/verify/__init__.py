"""``tlx verify``: compare → gate (one set of tolerance profiles) → report; localize."""

from exporter.verify.verify import ParityReport, verify_run

__all__ = ["ParityReport", "verify_run"]

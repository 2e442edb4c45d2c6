"""What ``tlx verify`` found: one result per candidate and the report around them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from exporter.core.machine import machine_facts
from exporter.core.runfolder import WEIGHTS_NAME

SCHEMA_VERSION = 1
HELDOUT = "heldout"


@dataclass
class CandidateResult:
    """Parity of one runtime × artifact against the reference."""

    runtime: str
    artifact: str
    format: str
    precision: str
    tolerance: dict[str, Any]
    passed: bool = False
    failures: list[str] = field(default_factory=list)
    error: str | None = None
    overall: dict[str, Any] | None = None
    per_input: dict[str, dict[str, Any]] = field(default_factory=dict)
    accuracy_reference_pct: float | None = None
    accuracy_candidate_pct: float | None = None
    accuracy_change_points: float | None = None
    # The paired 95 % interval of the accuracy change (points), when labels were there.
    accuracy_change_ci95_points: dict[str, Any] | None = None
    # Why this candidate's verdict reads differently (a pruned model: task level only).
    overall_note: str | None = None
    runtime_info: dict[str, Any] = field(default_factory=dict)
    localization: dict[str, Any] | None = None
    # False when the profile's verdict rests on held-out images (int8) and there were none
    # (--samples 0): the pass then covers random inputs only, and says so.
    task_checked: bool = True
    # The file's manifest hash: a later consumer (predict, the Triton export) can tell a
    # verdict about this file from one about a file re-exported since.
    sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ParityReport:
    """Everything ``tlx verify`` found; ``verdict`` is ``pass`` or ``fail``."""

    run_dir: Path
    config: dict[str, Any]
    environment: dict[str, Any]
    inputs: dict[str, Any]
    candidates: list[CandidateResult]
    skipped: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    math: dict[str, Any] = field(default_factory=dict)
    # Instruction set, usable cores, memory limit (exporter.core.machine).
    machine: dict[str, Any] = field(default_factory=machine_facts)
    # The report files written (verify.json/.md, or verify-server.*), in that order.
    files: list[Path] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.candidates) and all(c.passed for c in self.candidates)

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "fail"

    @property
    def gate_failures(self) -> list[str]:
        """One line per candidate that failed its gate (empty when every one passed)."""
        return [
            f"{c.runtime}/{c.artifact}: {'; '.join(c.failures)}"
            for c in self.candidates
            if not c.passed
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "command": "verify",
            "run_dir": str(self.run_dir),
            "config": self.config,
            "environment": self.environment,
            "machine": self.machine,
            "reference": {"runtime": "eager", "artifact": WEIGHTS_NAME, "device": "cpu"},
            "math": self.math,
            "inputs": self.inputs,
            "candidates": [c.to_dict() for c in self.candidates],
            "skipped": self.skipped,
            "notes": self.notes,
            "verdict": self.verdict,
            "failed_n": sum(not c.passed for c in self.candidates),
            "passed_n": sum(c.passed for c in self.candidates),
            "not_task_checked": [
                f"{c.runtime}/{c.artifact}" for c in self.candidates if not c.task_checked
            ],
        }

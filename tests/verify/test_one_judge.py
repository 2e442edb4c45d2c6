"""Every comparison goes through the one judge: no stage builds a verdict of its own."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "exporter"
JUDGE_HOME = {"verify/tolerance.py", "verify/verdict.py"}
# The old entry points, each once a judge with its own result type.
RETIRED = ("gate_logits", "GateResult", "judge_outputs")
BUILDING_BLOCKS = re.compile(r"(?<![\w.])(compare|gate)\(|tolerance\.(compare|gate)\(")


def _sources() -> list[tuple[str, str]]:
    return [
        (p.relative_to(PACKAGE).as_posix(), p.read_text(encoding="utf-8"))
        for p in sorted(PACKAGE.rglob("*.py"))
    ]


def test_no_stage_calls_compare_or_gate_outside_the_judge() -> None:
    offenders = [
        f"{rel}:{n}: {line.strip()}"
        for rel, text in _sources()
        if rel not in JUDGE_HOME
        for n, line in enumerate(text.splitlines(), 1)
        if BUILDING_BLOCKS.search(line) and not line.lstrip().startswith(("#", "def "))
    ]
    assert not offenders, "judge with exporter.verify.verdict.judge:\n" + "\n".join(offenders)


def test_the_retired_judges_are_gone() -> None:
    found = [f"{rel}: {name}" for rel, text in _sources() for name in RETIRED if name in text]
    assert not found, found


def test_the_building_block_pattern_finds_a_call() -> None:
    assert BUILDING_BLOCKS.search("    verdict = gate(compare(a, b, t), t)")
    assert not BUILDING_BLOCKS.search("    verdict = judge(a, b, t)")
    assert not BUILDING_BLOCKS.search("    x = self.gate(y)")

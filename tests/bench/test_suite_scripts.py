"""benchmarks/suite.py: gpu_suite.sh's deadline arithmetic and the RESULTS.md section append."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmarks.suite import append_to_section, main, step_timeout


def test_a_step_gets_its_own_timeout_while_time_is_plenty() -> None:
    assert step_timeout(elapsed_s=10, total_s=510, step_timeout_s=200, reserve_s=30) == 200


def test_the_last_step_is_cut_to_what_the_deadline_leaves() -> None:
    # 510 - 30 reserved - 400 elapsed = 80 s left: the 200 s step gets 80.
    assert step_timeout(elapsed_s=400, total_s=510, step_timeout_s=200, reserve_s=30) == 80
    assert step_timeout(elapsed_s=400.7, total_s=510, step_timeout_s=200, reserve_s=30) == 79


def test_a_step_below_the_minimum_is_skipped() -> None:
    kw = dict(total_s=510, step_timeout_s=200, reserve_s=30, min_step_s=20)
    assert step_timeout(elapsed_s=461, **kw) == 0
    assert step_timeout(elapsed_s=460, **kw) == 20
    assert step_timeout(elapsed_s=600, **kw) == 0  # already past the deadline


@given(
    elapsed=st.floats(0, 2000),
    total=st.floats(0, 2000),
    step=st.floats(0, 1000),
    reserve=st.floats(0, 200),
    minimum=st.floats(1, 100),
)
def test_never_past_the_deadline_nor_over_the_step_limit(
    elapsed: float, total: float, step: float, reserve: float, minimum: float
) -> None:
    t = step_timeout(
        elapsed_s=elapsed,
        total_s=total,
        step_timeout_s=step,
        reserve_s=reserve,
        min_step_s=minimum,
    )
    assert t == 0 or (minimum <= t <= step and elapsed + t + reserve <= total)


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_bad_numbers_are_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="--elapsed"):
        step_timeout(elapsed_s=bad, total_s=10, step_timeout_s=5)
    with pytest.raises(ValueError, match="--min"):
        step_timeout(elapsed_s=0, total_s=10, step_timeout_s=5, min_step_s=0)


def test_cli_prints_seconds_and_exits_2_on_bad_input(capsys: pytest.CaptureFixture) -> None:
    assert main(["--elapsed", "400", "--total", "510", "--step", "200", "--reserve", "30"]) == 0
    assert capsys.readouterr().out.strip() == "80"
    assert main(["--elapsed", "-5", "--total", "510", "--step", "200"]) == 2
    assert "--elapsed" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--elapsed", "abc", "--total", "1", "--step", "1"])
    assert exc.value.code == 2


def test_append_to_section_keeps_other_sections(tmp_path: Path) -> None:
    md = tmp_path / "RESULTS.md"
    md.write_text("# Results\n\n## other\n\nkeep me\n\n## mine\n\nold run\n\n## last\n\nx\n")
    append_to_section(md, "## mine", "new run")
    text = md.read_text()
    assert text.index("old run") < text.index("new run") < text.index("## last")
    assert "## other\n\nkeep me\n\n## mine" in text and text.endswith("## last\n\nx\n")
    append_to_section(md, "## fresh", "first")
    assert md.read_text().endswith("## last\n\nx\n\n## fresh\n\nfirst\n")
    append_to_section(tmp_path / "new.md", "## s", "b")
    assert (tmp_path / "new.md").read_text() == "## s\n\nb\n"

"""The machine facts: cpuinfo flags, cgroup v1/v2 CPU quota and memory limit, affinity."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from exporter.core import machine as m

X86_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Core(TM) i7-8700T CPU @ 2.40GHz
flags\t\t: fpu vme sse4_2 avx f16c fma avx2 bmi2

processor\t: 1
model name\t: Intel(R) Core(TM) i7-8700T CPU @ 2.40GHz
flags\t\t: fpu vme sse4_2 avx f16c fma avx2 bmi2
"""

SPR_FLAGS = "flags : avx2 fma avx512f avx512bw avx512_vnni avx512_bf16 amx_tile amx_int8 amx_bf16\n"

ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 asimddp sve i8mm bf16
CPU implementer\t: 0x41
"""


def test_x86_flags_give_avx2_without_vnni_and_the_2x_note() -> None:
    isa = m.isa_from_flags(m.parse_cpu_flags(X86_CPUINFO))
    assert isa == ("sse4_2", "avx", "avx2", "fma", "f16c")
    assert "about 2x" in m.int8_note(isa) and "without VNNI" in m.int8_note(isa)
    assert m.cpu_model_name(X86_CPUINFO).startswith("Intel(R) Core(TM) i7-8700T")


def test_vnni_and_amx_notes() -> None:
    assert "about 4x" in m.int8_note(("avx2", "avx512_vnni"))
    assert "about 4x" in m.int8_note(("avx2", "avx_vnni"))
    isa = m.isa_from_flags(m.parse_cpu_flags(SPR_FLAGS))
    assert {"amx_tile", "amx_int8", "amx_bf16", "avx512_vnni"} <= set(isa)
    assert "AMX" in m.int8_note(isa)
    assert "gains little" in m.int8_note(())


def test_arm_features() -> None:
    isa = m.isa_from_flags(m.parse_cpu_flags(ARM_CPUINFO))
    assert isa == ("asimd", "asimddp", "sve", "i8mm", "bf16")
    assert "I8MM" in m.int8_note(isa)


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("max 100000", None), ("150000 100000", 1.5), ("100000 100000\n", 1.0), ("", None)],
)
def test_cgroup_v2_cpu_max(tmp_path: Path, text: str, cpus: float | None) -> None:
    (tmp_path / "cpu.max").write_text(text)
    assert m.cpu_quota(tmp_path) == cpus


@pytest.mark.parametrize(
    ("quota", "period", "cpus"), [("-1", "100000", None), ("50000", "100000", 0.5)]
)
def test_cgroup_v1_cfs(tmp_path: Path, quota: str, period: str, cpus: float | None) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(quota + "\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(period + "\n")
    assert m.cpu_quota(tmp_path) == cpus


def test_no_cgroup_files_is_unlimited(tmp_path: Path) -> None:
    assert m.cpu_quota(tmp_path) is None
    assert m.cgroup_memory(tmp_path) == (None, None)


@pytest.mark.parametrize(
    ("affinity", "quota", "usable"),
    [(8, None, 8), (8, 1.5, 2), (8, 0.5, 1), (1, 4.0, 1), (4, 2.0, 2), (2, 2.0000001, 2)],
)
def test_usable_is_min_of_affinity_and_ceil_quota(
    affinity: int, quota: float | None, usable: int
) -> None:
    assert m.combine_cpus(affinity, quota) == usable


def test_usable_cpus_reads_affinity_and_quota(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setenv(m.CGROUP_ROOT_ENV, str(tmp_path))
    assert m.usable_cpus() == 4
    (tmp_path / "cpu.max").write_text("150000 100000")
    assert m.usable_cpus() == 2


def test_memory_limit_v2_and_v1(tmp_path: Path) -> None:
    (tmp_path / "memory.max").write_text(str(3 << 30))
    (tmp_path / "memory.current").write_text(str(1 << 30))
    assert m.cgroup_memory(tmp_path) == (3 << 30, 1 << 30)
    (tmp_path / "memory.max").write_text("max\n")
    assert m.cgroup_memory(tmp_path)[0] is None
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712")
    assert m.cgroup_memory(v1)[0] is None  # v1's "unlimited"
    (v1 / "memory" / "memory.limit_in_bytes").write_text(str(2 << 30))
    assert m.cgroup_memory(v1)[0] == 2 << 30


def test_machine_block_and_its_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    (tmp_path / "cpu.max").write_text("100000 100000")
    (tmp_path / "memory.max").write_text(str(4 << 30))
    facts = m.machine(tmp_path, X86_CPUINFO).to_dict()
    assert facts["isa"] == ["sse4_2", "avx", "avx2", "fma", "f16c"]
    assert facts["cpus_affinity"] == 3 and facts["cpu_quota"] == 1.0
    assert facts["cpus_available"] == 1 and isinstance(facts["cpus_available"], int)
    assert facts["memory_limit_bytes"] == 4 << 30
    line = m.machine_line(facts)
    assert "AVX2" in line and "1 usable cores" in line and "(cgroup limit)" in line
    assert "about 2x" in line

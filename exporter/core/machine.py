"""The machine as it matters for speed: instruction set, usable cores, memory limit.

The one place tlx reads the CPU flags, the process's CPU affinity and the cgroup's CPU quota
and memory limit; threads (:func:`usable_cpus`), serve's instance plan, the memory check
of ``core/resources.py`` and every report's ``machine`` block ask here.

A container limited to 2 CPUs on a 64-core node still shows 64 cores to ``os.cpu_count()``,
and PyTorch or ONNX Runtime would start 64 threads (kserve/kserve #1031,
triton-inference-server/server #5067): the usable count is the smaller of the affinity mask
and the CPU quota rounded up. ``TLX_CGROUP_ROOT`` and ``TLX_CPUINFO`` point the readers at
other files (tests, or a pod's values read elsewhere).
"""

from __future__ import annotations

import math
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

CGROUP_ROOT_ENV = "TLX_CGROUP_ROOT"
CPUINFO_ENV = "TLX_CPUINFO"
UNLIMITED = 1 << 60  # cgroup v1 says "no limit" as a number near 2**63

# The instruction-set names reported, in order: x86 flags, then ARM "Features".
X86_ISA = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)
ARM_ISA = ("asimd", "asimddp", "asimdhp", "sve", "sve2", "i8mm", "bf16", "sme")


@dataclass(frozen=True)
class Machine:
    """What this process may use and what its CPU can do (the reports' ``machine`` block)."""

    arch: str  # platform.machine(): x86_64, aarch64
    cpu_model: str
    isa: tuple[str, ...]  # the speed-relevant instruction-set extensions found (e.g. avx2)
    cpus_online: int  # every CPU of the machine (os.cpu_count())
    cpus_affinity: int  # CPUs in this process's affinity mask (taskset, a cpuset)
    cpu_quota: float | None  # the cgroup CPU quota in CPUs (1.5), None when unlimited
    cpus_available: int  # the cores the process may use: min(affinity, ceil(quota))
    memory_total_bytes: int | None  # MemTotal
    memory_limit_bytes: int | None  # the cgroup memory limit, None when unlimited
    int8_note: str  # what the instruction set means for int8 models, in one sentence

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["isa"] = list(self.isa)
        return d


# --- instruction set ----------------------------------------------------------------------


def parse_cpu_flags(cpuinfo_text: str) -> set[str]:
    """The flags of the first CPU in ``/proc/cpuinfo`` text (x86 ``flags``, ARM ``Features``)."""
    for line in cpuinfo_text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            return set(value.split())
    return set()


def isa_from_flags(flags: set[str]) -> tuple[str, ...]:
    """The speed-relevant extensions among ``flags``, in a fixed order."""
    return tuple(name for name in (*X86_ISA, *ARM_ISA) if name in flags)


def int8_note(isa: tuple[str, ...] | list[str]) -> str:
    """What the instruction set means for int8 convolutions, from the flags found.

    The figures are the runtimes' published ones (OpenVINO's ResNet-50 int8 on an AVX2 CPU:
    1.9x; VNNI's int8 dot product roughly doubles that; AMX tiles go far beyond).
    """
    have = set(isa)
    if have & {"amx_int8", "amx_tile"}:
        return "int8 convolutions can gain far more than 4x over fp32 here (AMX tiles)"
    if have & {"avx512_vnni", "avx_vnni"}:
        return "int8 convolutions can gain about 4x over fp32 here (VNNI)"
    if "avx2" in have:
        return (
            "int8 convolutions can gain about 2x over fp32 here (AVX2 without VNNI); "
            "about 4x with VNNI"
        )
    if "i8mm" in have:
        return "int8 convolutions can gain about 4x over fp32 here (ARM I8MM)"
    if "asimddp" in have:
        return "int8 convolutions can gain about 2-4x over fp32 here (ARM dot product)"
    return "int8 gains little here: no AVX2, VNNI or ARM dot-product instructions were found"


# --- cores ----------------------------------------------------------------------------------


def cgroup_root() -> Path:
    return Path(os.environ.get(CGROUP_ROOT_ENV, "/sys/fs/cgroup"))


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def parse_cpu_max(text: str | None) -> float | None:
    """cgroup v2 ``cpu.max`` (``"max 100000"``: unlimited; ``"150000 100000"``: 1.5 CPUs)."""
    parts = (text or "").split()
    if not parts or parts[0] == "max":
        return None
    return parse_cfs(parts[0], parts[1] if len(parts) > 1 else "100000")


def parse_cfs(quota_text: str | None, period_text: str | None) -> float | None:
    """cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (a quota of -1: unlimited)."""
    try:
        quota, period = int(quota_text or ""), int(period_text or "")
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def cpu_quota(root: Path | None = None) -> float | None:
    """The cgroup CPU quota in CPUs (v2 ``cpu.max``, else v1 CFS), None when unlimited."""
    root = root or cgroup_root()
    text = _read(root / "cpu.max")
    if text is not None:
        return parse_cpu_max(text)
    for sub in ("cpu", "cpu,cpuacct", "cpuacct,cpu", "."):
        quota = _read(root / sub / "cpu.cfs_quota_us")
        if quota is not None:
            return parse_cfs(quota, _read(root / sub / "cpu.cfs_period_us"))
    return None


def affinity_count() -> int:
    """CPUs in this process's affinity mask (``os.cpu_count()`` where there is none)."""
    affinity = getattr(os, "sched_getaffinity", None)
    if affinity is not None:
        try:
            return max(1, len(affinity(0)))
        except OSError:
            pass
    return os.cpu_count() or 1


def combine_cpus(affinity: int, quota: float | None) -> int:
    """min(affinity, ceil(quota)), at least 1 (a quota of None: unlimited)."""
    count = affinity
    if quota is not None:
        count = min(count, max(1, math.ceil(quota - 1e-9)))
    return max(1, count)


def usable_cpus() -> int:
    """The cores this process may use now: its affinity mask and its cgroup CPU quota."""
    return combine_cpus(affinity_count(), cpu_quota())


# --- memory ---------------------------------------------------------------------------------


def cgroup_memory(root: Path | None = None) -> tuple[int | None, int | None]:
    """(limit, used) bytes of the cgroup (v2 ``memory.max``, else v1); None when unknown."""
    root = root or cgroup_root()

    def number(path: Path) -> int | None:
        text = _read(path)
        return int(text) if text and text.isdigit() else None

    # cgroup v2: memory.max is "max" when unlimited (not a number: None).
    if (root / "memory.max").exists():
        limit, used = number(root / "memory.max"), number(root / "memory.current")
    else:
        limit = number(root / "memory" / "memory.limit_in_bytes")
        used = number(root / "memory" / "memory.usage_in_bytes")
    if limit is not None and limit >= UNLIMITED:
        limit = None
    return limit, used


def mem_total() -> int | None:
    """The machine's memory in bytes (MemTotal of /proc/meminfo)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):  # no sysconf, or not this name here
        return None


# --- the whole picture ----------------------------------------------------------------------


def cpu_model_name(cpuinfo_text: str) -> str:
    """The model name in ``/proc/cpuinfo`` text (x86 ``model name``; else the platform's)."""
    for line in cpuinfo_text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("model name", "Model", "Hardware"):
            return value.strip()
    return platform.processor() or platform.machine()


def machine_facts() -> dict[str, Any]:
    """:func:`machine` as the reports' ``machine`` block (JSON-ready)."""
    return machine().to_dict()


def machine_line(facts: dict[str, Any]) -> str:
    """The ``machine`` block in one sentence for bench.md / verify.md / the demo's summary."""
    isa = " ".join(n.upper() for n in facts.get("isa") or []) or "no SIMD extension found"
    quota = facts.get("cpu_quota")
    quota_text = f", CPU quota {quota:g}" if quota is not None else ""
    mem = facts.get("memory_limit_bytes") or facts.get("memory_total_bytes")
    mem_text = f"; memory {mem / 2**30:.1f} GiB" if mem else ""
    if facts.get("memory_limit_bytes"):
        mem_text += " (cgroup limit)"
    return (
        f"{facts.get('cpu_model')} ({facts.get('arch')}), instruction set {isa}; "
        f"{facts.get('cpus_available')} usable cores of {facts.get('cpus_online')} "
        f"(affinity {facts.get('cpus_affinity')}{quota_text}){mem_text}. "
        f"{str(facts.get('int8_note', '')).capitalize()}."
    )


def machine(root: Path | None = None, cpuinfo_text: str | None = None) -> Machine:
    """Read this machine's facts now (cheap: a few small files)."""
    root = root or cgroup_root()
    text = cpuinfo_text
    if text is None:
        text = _read(Path(os.environ.get(CPUINFO_ENV, "/proc/cpuinfo"))) or ""
    isa = isa_from_flags(parse_cpu_flags(text))
    quota = cpu_quota(root)
    affinity = affinity_count()
    limit, _used = cgroup_memory(root)
    return Machine(
        arch=platform.machine(),
        cpu_model=cpu_model_name(text),
        isa=isa,
        cpus_online=os.cpu_count() or 1,
        cpus_affinity=affinity,
        cpu_quota=quota,
        cpus_available=combine_cpus(affinity, quota),
        memory_total_bytes=mem_total(),
        memory_limit_bytes=limit,
        int8_note=int8_note(isa),
    )

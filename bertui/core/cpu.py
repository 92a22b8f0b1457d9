"""What the CPU computes natively: the bf16 instructions that make bf16 autocast pay off.

bf16 autocast on a CPU is about 1.5× faster where the processor has bf16 dot-product units
(x86 AVX512-BF16, Intel AMX, Arm's BF16 extension) and slower than fp32 where it has not (the
conversions are emulated). ``native_bf16(flags)`` reads a set of CPU feature flags, so it is
testable with any set; ``cpu_flags()`` gathers this machine's (torch's own CPU capability
report, and ``/proc/cpuinfo`` where there is one); ``cpu_precision()`` is the choice
``--precision auto`` makes on a CPU, with its reason as people read it.

Note that ``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` is no test of this: it says True on
any AVX512 CPU (oneDNN can run bf16 there, emulated), native units or not.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

# Flag → the name people know it by, best first. x86 flags as Linux and torch spell them;
# "bf16" is the Arm (aarch64) feature of /proc/cpuinfo's Features line.
NATIVE_BF16 = (
    ("amx_bf16", "AMX"),
    ("avx512_bf16", "AVX512-BF16"),
    ("bf16", "Arm BF16"),
)
CPUINFO = Path("/proc/cpuinfo")


def native_bf16(flags: Iterable[str]) -> str | None:
    """The bf16 unit a CPU with these feature flags has ("AMX", "AVX512-BF16", "Arm BF16"),
    or None when it has none. Flags are matched case-insensitively."""
    have = {f.strip().lower() for f in flags}
    return next((name for flag, name in NATIVE_BF16 if flag in have), None)


def cpuinfo_flags(text: str) -> set[str]:
    """The feature flags of a ``/proc/cpuinfo`` text (x86 ``flags``, Arm ``Features``)."""
    out: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            out.update(value.split())
    return out


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """This machine's CPU feature flags: those torch reports as present
    (``torch.cpu.get_capabilities()``, where this torch has it) and ``/proc/cpuinfo``'s."""
    flags: set[str] = set()
    try:
        import torch

        caps = torch.cpu.get_capabilities()
        flags.update(k for k, v in caps.items() if v is True)
    except Exception:  # an older torch, or none: /proc/cpuinfo alone
        pass
    try:
        flags.update(cpuinfo_flags(CPUINFO.read_text(errors="replace")))
    except OSError:
        pass
    return frozenset(flags)


def cpu_precision(flags: Iterable[str] | None = None) -> tuple[str, str]:
    """(precision, reason) that ``--precision auto`` picks on a CPU with ``flags`` (default:
    this one's): bf16 autocast where it computes bf16 natively, fp32 elsewhere."""
    unit = native_bf16(cpu_flags() if flags is None else flags)
    if unit is None:
        return "fp32", "fp32: the CPU has no native bf16"
    return "bf16", f"bf16: the CPU has {unit}"

"""What machine this is: the CPU's name and features, read in one place."""

import functools
import platform


@functools.cache
def _cpuinfo():
    """/proc/cpuinfo's text (Linux), else ""."""
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return ""


def _field(name):
    for line in _cpuinfo().splitlines():
        if line.split(":", 1)[0].strip() == name:
            return line.split(":", 1)[1].strip()
    return None


def processor_name():
    """The CPU's model name, e.g. "AMD EPYC" (Linux), else the architecture."""
    return _field("model name") or platform.processor() or platform.machine()


def cpu_flags():
    """The CPU's feature flags (Linux: e.g. {"avx2", "avx512f", ...}), else empty."""
    return frozenset((_field("flags") or "").split())


def vector_extensions():
    """The widest x86 vector extension the CPU has: "AVX-512", "AVX2" or "neither"."""
    flags = cpu_flags()
    return "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "neither"

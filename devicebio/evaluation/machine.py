"""The machine an evaluation or a benchmark ran on, described the same way by every report
(``devicebio eval ...`` and every script in ``benchmarks/``).

Speed figures are only meaningful beside the machine and its load, so each report carries this
dict. Standard library only: it must import before (and without) numpy or onnxruntime.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

#: Distributions whose versions a benchmark's figures depend on; absent ones say so.
DEFAULT_PACKAGES = ("numpy", "onnxruntime", "opencv-python-headless", "opencv-python", "dlib-bin")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _ram_gib() -> float | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):  # not every platform has one
        return None


def describe_machine(packages: tuple[str, ...] = DEFAULT_PACKAGES) -> dict[str, Any]:
    """CPU model, cores (all and usable by this process), RAM, OS, Python, the versions of
    ``packages`` that are installed, and the load average (1, 5, 15 min) right now."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 1
    versions = {name: v for name in packages if (v := _version(name)) is not None}
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "ram_gib": _ram_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": versions,
        "load_average": _load_average(),
    }


def machine_line(m: dict[str, Any]) -> str:
    """One line for a report's header."""
    pkgs = ", ".join(f"{k} {v}" for k, v in m["packages"].items())
    return (
        f"machine: {m['cpu_model']}, {m['cores']} cores ({m['cores_usable']} usable), "
        f"{m['ram_gib']} GiB RAM, Python {m['python']}; {pkgs}; "
        f"load average {m['load_average']}"
    )

"""The machine description every script in ``benchmarks/`` puts in its report.

It lives in :mod:`devicebio.evaluation.machine` (standard library only), so that the
evaluations (``devicebio eval ...``) and the benchmarks describe a machine the same way; this
module only keeps the scripts' ``from _machine import ...`` short.
"""

from devicebio.evaluation.machine import DEFAULT_PACKAGES, describe_machine, machine_line

__all__ = ["DEFAULT_PACKAGES", "describe_machine", "machine_line"]

"""The ``devicebio`` command line (``python -m devicebio.cli``); see :mod:`devicebio.cli.main`."""

from __future__ import annotations

from devicebio.cli.main import build_parser, main

__all__ = ["build_parser", "main"]

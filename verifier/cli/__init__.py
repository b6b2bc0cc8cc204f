"""``verifier``: the relying party's command line, on one store (``--db``).

Every command that reads or changes verifier state takes ``--db``: a SQLite file (a plain
path or ``sqlite:///path``) or ``postgresql://...``; several ``verifier`` processes may share
either (see docs/deployment.md for what SQLite allows). Output is text for people, or JSON
with ``--json`` (the same views as the HTTP service's answers, from :mod:`verifier.views`).

One module per command family: :mod:`.ceremonies` (challenge, register, verify, purge,
audit), :mod:`.revocation` (keygen, revoke, revocation show/publish/install),
:mod:`.inspect`, :mod:`.serve`; :mod:`._common` holds the exit-code contract they share.
"""

from __future__ import annotations

from ._common import EXIT_OK, EXIT_REFUSED, EXIT_STORAGE, EXIT_USAGE
from .main import build_parser, main

__all__ = ["EXIT_OK", "EXIT_REFUSED", "EXIT_STORAGE", "EXIT_USAGE", "build_parser", "main"]

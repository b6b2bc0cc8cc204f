"""The serial mark: the highest revocation list ever installed, kept OUTSIDE the database.

A revocation list's rollback check (serial never goes down) lives in the database it
protects, so restoring an older copy of the database used to undo it: the older list was in
force again (a revoked credential worked again) and the next routine publish signed a second,
different list under a serial already published. The mark closes that: a small file, written
atomically (fsync'd, then renamed) under an exclusive lock, that holds the highest serial
installed and the signed list itself, bound to the issuer's public key.

* An **issuer** keeps it beside its signing key (``<key file>.serial``): it belongs with the
  key, in the key's backup, never in the database's. :func:`~verifier.revocation.publish`
  with ``mark=`` refuses to build on a database that lags the mark, except by first putting
  the marked list back (it is signed by this very key), so a serial is never reused and never
  goes down.
* A **verifier** that only holds the issuer's public key keeps its own mark file (``verifier
  revocation install|verify|register --serial-mark FILE``).

:meth:`SerialMark.guard` wraps a store so that every read of the list in force (the checks
of ``check_not_revoked``, the publisher, the HTTP service) refuses a database whose list is
older than the mark (``REVOCATION_LIST_ROLLBACK``), and every install raises the mark.

A missing mark while the database already holds a list is refused too: a mark that was
deleted is indistinguishable from one that never existed (``adopt`` makes the first one on
purpose). What the mark cannot catch: the database AND the mark restored together (keep the
mark with the key, not with the database), or a mark lagging by one after a crash between the
database commit and the mark's write (the next install or publish raises it again).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nacl.signing

from devicebio.protocol import atomic_write, b64url_encode
from verifier.errors import Reason, VerifierError
from verifier.store import Store
from verifier.store.base import use_challenge_and_get_credential

from .codec import MAX_LIST_BYTES, parse_revocation_list

__all__ = ["MARK_KIND", "MarkedStore", "SerialMark"]

MARK_KIND = "devicebio-revocation-serial-mark"
_MAX_MARK = 2 * MAX_LIST_BYTES  # base64 of the largest list, plus a few fields


def _rollback(message: str) -> VerifierError:
    return VerifierError(Reason.REVOCATION_LIST_ROLLBACK, message)


class SerialMark:
    """The mark file at ``path`` for lists signed by ``issuer_key``."""

    def __init__(self, path: str | Path, issuer_key: nacl.signing.VerifyKey) -> None:
        if not isinstance(issuer_key, nacl.signing.VerifyKey):
            raise VerifierError(Reason.MALFORMED, "issuer_key must be a nacl.signing.VerifyKey")
        self.path = Path(path)
        self.issuer_key = issuer_key

    @classmethod
    def beside_key(cls, key_file: str | Path, issuer_key: nacl.signing.VerifyKey) -> SerialMark:
        """The issuer's mark: ``<key file>.serial``, kept (and backed up) with the key."""
        key_file = Path(key_file)
        return cls(key_file.with_name(key_file.name + ".serial"), issuer_key)

    # -- the file ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # Read-compare-write under one exclusive lock: two installers must not let the
        # slower one write back a lower serial.
        lock = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise VerifierError(
                Reason.STORAGE, f"cannot lock the serial mark {self.path}: {exc.strerror}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def read(self) -> tuple[int, bytes] | None:
        """``(serial, signed list)`` of the mark, or ``None`` when there is no mark file.
        A mark that is not this issuer's, or does not verify, is ``STORAGE``."""
        try:
            with open(self.path, "rb") as fh:
                raw = fh.read(_MAX_MARK + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise VerifierError(
                Reason.STORAGE, f"cannot read the serial mark {self.path}: {exc.strerror}"
            ) from None
        try:
            if len(raw) > _MAX_MARK:
                raise ValueError("too large")
            obj = json.loads(raw)
            if not isinstance(obj, dict) or obj.get("devicebio") != MARK_KIND:
                raise ValueError("not a serial mark")
            if obj.get("x") != b64url_encode(bytes(self.issuer_key)):
                raise ValueError("the mark of another issuer key")
            text = obj["signed"]
            data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            serial = obj["serial"]
            rl = parse_revocation_list(data, self.issuer_key)
            if type(serial) is not int or rl.serial != serial:
                raise ValueError("serial does not match the list")
        except (ValueError, KeyError, TypeError, RecursionError, VerifierError) as exc:
            raise VerifierError(
                Reason.STORAGE, f"the serial mark {self.path} is corrupt ({exc})"
            ) from None
        return serial, data

    def _write(self, serial: int, data: bytes) -> None:
        body = {
            "devicebio": MARK_KIND,
            "x": b64url_encode(bytes(self.issuer_key)),
            "serial": serial,
            "signed": b64url_encode(data),
        }
        try:
            atomic_write(self.path, (json.dumps(body) + "\n").encode(), mode=0o600)
        except OSError as exc:
            raise VerifierError(
                Reason.STORAGE, f"cannot write the serial mark {self.path}: {exc.strerror}"
            ) from None

    # -- the rules -----------------------------------------------------------------------

    def check(self, state: tuple[int, bytes] | None) -> None:
        """Refuse a database state older than the mark (``REVOCATION_LIST_ROLLBACK``)."""
        self._check(self.read(), state)

    def _check(self, marked: tuple[int, bytes] | None, state: tuple[int, bytes] | None) -> None:
        if marked is None:
            if state is not None:
                # A list some other key signed is that problem first, not a missing mark.
                parse_revocation_list(state[1], self.issuer_key)
                raise _rollback(
                    f"the database holds list serial {state[0]} but there is no serial mark "
                    f"{self.path}: restore the mark (it is kept with the key), or adopt this "
                    "database's list as the first mark if it never had one"
                )
            return
        serial, data = marked
        if state is None or state[0] < serial:
            held = "no list" if state is None else f"serial {state[0]}"
            raise _rollback(
                f"the database holds {held} but serial {serial} was installed: the database "
                f"was restored from an older copy; install list serial {serial} (or newer)"
            )
        if state[0] == serial and state[1] != data:
            raise _rollback(f"serial {serial} in the database is not the list marked")

    def admit(self, serial: int, data: bytes) -> None:
        """Refuse installing ``serial`` below the mark, or equal to it with other bytes."""
        marked = self.read()
        if marked is not None and (
            serial < marked[0] or (serial == marked[0] and bytes(data) != marked[1])
        ):
            raise _rollback(f"serial {serial} is older than the serial mark ({marked[0]})")

    def advance(self, serial: int, data: bytes) -> None:
        """Raise the mark to ``serial`` (its signed list ``data``); never lowers it."""
        rl = parse_revocation_list(bytes(data), self.issuer_key)
        if rl.serial != serial:
            raise VerifierError(Reason.MALFORMED, "serial does not match the list")
        with self._locked():
            marked = self.read()
            if marked is not None and marked[0] >= serial:
                if marked[0] == serial and marked[1] != bytes(data):
                    raise _rollback(f"serial {serial} was already marked with other bytes")
                return
            self._write(serial, bytes(data))

    def adopt(self, state: tuple[int, bytes] | None) -> bool:
        """Make the first mark from the list in force (a key or a verifier from before marks
        existed). Only when there is no mark yet; returns whether one was written."""
        if state is None:
            return False
        with self._locked():
            if self.read() is not None:
                return False
            parse_revocation_list(state[1], self.issuer_key)
            self._write(state[0], state[1])
        return True

    def guard(self, store: Store) -> MarkedStore:
        """``store`` with this mark enforced on every read and install of the list."""
        if isinstance(store, MarkedStore):
            if store.mark.path == self.path:
                return store
            store = store.inner
        return MarkedStore(store, self)


class MarkedStore:
    """A store whose list in force can never be older than its :class:`SerialMark`.

    Everything but the two revocation calls goes straight to the wrapped store."""

    def __init__(self, inner: Store, mark: SerialMark) -> None:
        self.inner = inner
        self.mark = mark

    def get_revocation_state(self) -> tuple[int, bytes] | None:
        state = self.inner.get_revocation_state()
        self.mark.check(state)
        return state

    def unchecked_revocation_state(self) -> tuple[int, bytes] | None:
        """The database's own state, lagging or not: what an install that may heal a
        restored database compares against (the install itself is still held to the mark)."""
        return self.inner.get_revocation_state()

    def set_revocation_state(self, serial: int, data: bytes) -> None:
        self.mark.admit(serial, data)
        self.inner.set_revocation_state(serial, data)
        self.mark.advance(serial, data)

    # The rest of the Store interface, delegated as it is.
    def insert_challenge(self, value: bytes, user: str, purpose: str, expires_at: float) -> None:
        self.inner.insert_challenge(value, user, purpose, expires_at)

    def use_challenge(self, value: bytes) -> tuple[str, str, float, bool] | None:
        return self.inner.use_challenge(value)

    def use_challenge_and_get_credential(self, value: bytes, credential_id: bytes) -> Any:
        # Spelled out, not left to __getattr__: the sign-in path calls this instead of the
        # two methods above, so whatever they ever check must be checked here too.
        return use_challenge_and_get_credential(self.inner, value, credential_id)

    def purge_expired_challenges(self, now: float) -> int:
        return self.inner.purge_expired_challenges(now)

    def count_open_challenges(self, user: str, now: float) -> int:
        return self.inner.count_open_challenges(user, now)

    def add_credential(self, rec: Any, *, first_for_user: bool = False) -> None:
        self.inner.add_credential(rec, first_for_user=first_for_user)

    def get_credential(self, credential_id: bytes) -> Any:
        return self.inner.get_credential(credential_id)

    def update_sign_count(self, credential_id: bytes, old: int, new: int) -> bool:
        return self.inner.update_sign_count(credential_id, old, new)

    def credentials_for_user(self, user: str) -> Any:
        return self.inner.credentials_for_user(user)

    def audit(self, event: str, **fields: str | int | float | bool | None) -> None:
        self.inner.audit(event, **fields)

    def __getattr__(self, name: str) -> Any:
        # atomic(), close(), audit_events(), purge_audit(), ...: whatever the backend offers.
        if name in ("inner", "mark"):  # not yet set (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

"""The vault: every piece of device state, sealed at rest.

Layout of a vault directory (0700)::

    vault.hdr                 CBOR header: format, schema version, vault id, KDF parameters,
                              and a sealed check value that tells a wrong key from a tampered record
    vault.lock                advisory lock serialising writers
    <kind>/<slot>             one record; <slot> is a keyed hash of (kind, id), so file names do
                              not reveal user names

A record file is ``MAGIC | slot(16) | nonce(24) | XChaCha20-Poly1305 ciphertext`` whose
associated data binds the vault id, the kind, the id and the schema version: a record copied
to another slot, another kind or another vault does not open. Writes go through
:func:`devicebio.protocol.files.atomic_write`, so an interrupted write leaves the previous
record intact.

What a vault cannot do in pure Python (see docs/threat-model.md): it cannot stop an attacker
who can already run code as the user from reading the key while the vault is open, and it
cannot prevent a whole-directory rollback to an older copy.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import os
import re
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cbor2
import nacl.pwhash
import nacl.utils

from devicebio.errors import DeviceBioError, Reason
from devicebio.hazmat.seal import (
    KEY_SIZE,
    SALT_SIZE,
    OpenFailed,
    argon2id_key,
    open_sealed,
    seal,
    subkey,
)
from devicebio.protocol import files as atomic
from devicebio.store import records

SCHEMA_VERSION = 1
FORMAT = "devicebio-vault"
HEADER = "vault.hdr"
LOCK = "vault.lock"
RECORD_MAGIC = b"DBV1"
SLOT_SIZE = 16
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,127}$")
_MAX_RECORD = 64 * 1024 * 1024


class KeyProvider(Protocol):
    """Supplies the 32-byte vault key. ``kdf`` is stored in the header; ``derive`` gets it back."""

    def new_params(self) -> dict[str, Any]: ...

    def derive(self, params: dict[str, Any], vault_id: bytes) -> bytes: ...


@dataclass(frozen=True)
class RawKey:
    """A caller-held 32-byte key (tests, or a key that a hardware keystore unwraps)."""

    key: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.key, bytes) or len(self.key) != KEY_SIZE:
            raise DeviceBioError(Reason.INVALID_ARGUMENT, f"a raw vault key is {KEY_SIZE} bytes")

    def new_params(self) -> dict[str, Any]:
        return {"alg": "raw"}

    def derive(self, params: dict[str, Any], vault_id: bytes) -> bytes:
        if params.get("alg") != "raw":
            raise DeviceBioError(Reason.WRONG_KEY, "this vault is not opened with a raw key")
        return self.key

    def __repr__(self) -> str:
        return "RawKey(<redacted>)"


@dataclass(frozen=True)
class PassphraseKey:
    """A passphrase stretched with Argon2id; the salt and cost live in the vault header.

    ``strength`` "moderate" (256 MiB, ~1 s here) is the default for real vaults;
    "interactive" (64 MiB) suits tests and low-memory devices.
    """

    passphrase: str
    strength: str = "moderate"

    def new_params(self) -> dict[str, Any]:
        if not self.passphrase:
            raise DeviceBioError(Reason.INVALID_ARGUMENT, "the passphrase is empty")
        ops, mem = {
            "interactive": (
                nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE,
                nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE,
            ),
            "moderate": (
                nacl.pwhash.argon2id.OPSLIMIT_MODERATE,
                nacl.pwhash.argon2id.MEMLIMIT_MODERATE,
            ),
        }[self.strength]
        return {"alg": "argon2id", "salt": nacl.utils.random(SALT_SIZE), "ops": ops, "mem": mem}

    def derive(self, params: dict[str, Any], vault_id: bytes) -> bytes:
        if params.get("alg") != "argon2id":
            raise DeviceBioError(Reason.WRONG_KEY, "this vault is not opened with a passphrase")
        salt, ops, mem = params.get("salt"), params.get("ops"), params.get("mem")
        if not (isinstance(salt, bytes) and len(salt) == SALT_SIZE):
            raise DeviceBioError(Reason.RECORD_CORRUPT, "vault header: bad KDF salt")
        # Bounds stop a tampered header from asking for absurd memory or zero work.
        if not (isinstance(ops, int) and isinstance(mem, int)):
            raise DeviceBioError(Reason.RECORD_CORRUPT, "vault header: bad KDF cost")
        if not (1 <= ops <= 64 and 8 * 1024 * 1024 <= mem <= 4 * 1024**3):
            raise DeviceBioError(Reason.RECORD_CORRUPT, "vault header: KDF cost out of range")
        return argon2id_key(self.passphrase.encode(), salt, ops, mem)

    def __repr__(self) -> str:
        return f"PassphraseKey(<redacted>, strength={self.strength!r})"


@dataclass(frozen=True)
class KeyringKey:
    """A random key kept in the OS keyring (needs the optional ``keyring`` package)."""

    service: str = "devicebio"

    def _keyring(self) -> Any:
        try:
            import keyring
        except ImportError:
            raise DeviceBioError(
                Reason.KEY_PROVIDER_UNAVAILABLE,
                "the OS keyring needs the 'keyring' package",
                hint="pip install 'devicebio[keyring]', or use a passphrase",
            ) from None
        return keyring

    def new_params(self) -> dict[str, Any]:
        return {"alg": "keyring", "service": self.service}

    def derive(self, params: dict[str, Any], vault_id: bytes) -> bytes:
        if params.get("alg") != "keyring":
            raise DeviceBioError(Reason.WRONG_KEY, "this vault is not opened with the keyring")
        kr = self._keyring()
        name = vault_id.hex()
        try:
            stored = kr.get_password(self.service, name)
            if stored is None:
                stored = nacl.utils.random(KEY_SIZE).hex()
                kr.set_password(self.service, name, stored)
            return bytes.fromhex(stored)
        except Exception as exc:  # keyring backends raise their own types
            raise DeviceBioError(
                Reason.KEY_PROVIDER_UNAVAILABLE, f"OS keyring: {type(exc).__name__}"
            ) from None


def _check_name(what: str, value: str) -> None:
    if not isinstance(value, str) or not _NAME.match(value):
        raise DeviceBioError(
            Reason.INVALID_ARGUMENT, f"{what} must match {_NAME.pattern}, got {value!r}"
        )


class Vault:
    """Sealed, crash-safe storage for one device profile: use :meth:`create` or :meth:`open`."""

    def __init__(self, path: Path, vault_id: bytes, master: bytes) -> None:
        self.path = path
        self.vault_id = vault_id
        self._seal_key = subkey(master, b"record-seal")
        self._slot_key = subkey(master, b"record-slot")
        self._check_key = subkey(master, b"header-check")
        self._lock_owner = threading.RLock()
        self._lock_depth = 0

    # ---- opening -------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike[str], key_provider: KeyProvider) -> Vault:
        root = Path(path)
        if (root / HEADER).exists():
            raise DeviceBioError(Reason.VAULT_EXISTS, f"a vault already exists at {root}")
        root.mkdir(mode=atomic.DIR_MODE, parents=True, exist_ok=True)
        os.chmod(root, atomic.DIR_MODE)
        vault_id = nacl.utils.random(16)
        params = key_provider.new_params()
        master = key_provider.derive(params, vault_id)
        vault = cls(root, vault_id, master)
        header = {
            "format": FORMAT,
            "v": SCHEMA_VERSION,
            "id": vault_id,
            "kdf": params,
            "check": seal(vault._check_key, b"devicebio-vault-ok", vault_id),
        }
        with vault.exclusive():
            atomic.atomic_write(root / HEADER, cbor2.dumps(header, canonical=True))
        vault.put(
            records.Kind.DEVICE,
            records.DEVICE_SECRET_ID,
            nacl.utils.random(records.DEVICE_SECRET_SIZE),
        )
        return vault

    @classmethod
    def open(cls, path: str | os.PathLike[str], key_provider: KeyProvider) -> Vault:
        root = Path(path)
        header_path = root / HEADER
        if not header_path.is_file():
            raise DeviceBioError(
                Reason.VAULT_NOT_FOUND,
                f"no vault at {root}",
                hint="create one with 'devicebio init --vault DIR'",
            )
        mode = stat.S_IMODE(root.stat().st_mode)
        if mode & 0o077:
            raise DeviceBioError(
                Reason.INSECURE_PERMISSIONS,
                f"{root} is accessible to other users (mode {mode:o})",
                hint=f"chmod 700 {root}",
            )
        header = cls._read_header(header_path)
        master = key_provider.derive(header["kdf"], header["id"])
        vault = cls(root, header["id"], master)
        try:
            open_sealed(vault._check_key, header["check"], header["id"])
        except OpenFailed:
            raise DeviceBioError(
                Reason.WRONG_KEY, "the key or passphrase does not open this vault"
            ) from None
        for kind_dir in (p for p in root.iterdir() if p.is_dir()):
            atomic.remove_stale_temps(kind_dir)
        return vault

    @staticmethod
    def _read_header(path: Path) -> dict[str, Any]:
        try:
            header = cbor2.loads(path.read_bytes())
        except OSError as exc:
            raise DeviceBioError(Reason.VAULT_NOT_FOUND, f"cannot read {path}: {exc}") from None
        except Exception:
            raise DeviceBioError(Reason.RECORD_CORRUPT, "vault header is not valid CBOR") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise DeviceBioError(Reason.RECORD_CORRUPT, "not a devicebio vault header")
        if header.get("v") != SCHEMA_VERSION:
            raise DeviceBioError(
                Reason.SCHEMA_UNSUPPORTED, f"vault schema {header.get('v')!r} is not supported"
            )
        if not (
            isinstance(header.get("id"), bytes)
            and len(header["id"]) == 16
            and isinstance(header.get("kdf"), dict)
            and isinstance(header.get("check"), bytes)
        ):
            raise DeviceBioError(Reason.RECORD_CORRUPT, "vault header fields are malformed")
        return header

    # ---- records -------------------------------------------------------------------------

    def _slot(self, kind: str, record_id: str) -> bytes:
        msg = cbor2.dumps([kind, record_id])
        return hmac.new(self._slot_key, msg, hashlib.sha256).digest()[:SLOT_SIZE]

    def _record_path(self, kind: str, slot: bytes) -> Path:
        return self.path / kind / slot.hex()

    def _aad(self, kind: str, slot: bytes) -> bytes:
        # The slot is a MAC of (kind, id), so binding it binds the id without needing the id
        # to open the record (which is what lets ids() list a kind).
        return cbor2.dumps([FORMAT, SCHEMA_VERSION, self.vault_id, kind, slot])

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the vault's writer lock (across threads and processes) for a whole
        read-modify-write, e.g. counting a PIN attempt or a signature counter: without it two
        processes could both read N and both write N + 1 (a free PIN guess, a reused
        counter). Re-entrant: ``put`` and ``delete`` inside the block join it."""
        with self._lock_owner:
            if self._lock_depth:
                self._lock_depth += 1
                try:
                    yield
                finally:
                    self._lock_depth -= 1
                return
            # flock locks belong to the open file, so a second open+flock in this process
            # would wait on the first: hence the depth count instead of locking again.
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, atomic.FILE_MODE)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._lock_depth = 1
                try:
                    yield
                finally:
                    self._lock_depth = 0
            finally:
                os.close(fd)

    def put(self, kind: str, record_id: str, value: Any) -> None:
        """Seal ``value`` (anything CBOR can encode) and replace the record atomically."""
        _check_name("kind", kind)
        _check_name("record id", record_id)
        try:
            plaintext = cbor2.dumps({"v": SCHEMA_VERSION, "id": record_id, "data": value})
        except Exception as exc:
            raise DeviceBioError(
                Reason.INVALID_ARGUMENT, f"record is not CBOR-encodable: {type(exc).__name__}"
            ) from None
        slot = self._slot(kind, record_id)
        blob = RECORD_MAGIC + slot + seal(self._seal_key, plaintext, self._aad(kind, slot))
        with self.exclusive():
            kind_dir = self.path / kind
            if not kind_dir.is_dir():
                atomic.make_private_dir(kind_dir)
                atomic.fsync_dir(self.path)
            atomic.atomic_write(self._record_path(kind, slot), blob)

    def get(self, kind: str, record_id: str) -> Any:
        _check_name("kind", kind)
        _check_name("record id", record_id)
        slot = self._slot(kind, record_id)
        path = self._record_path(kind, slot)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            raise DeviceBioError(
                Reason.RECORD_NOT_FOUND, f"no {kind} record {record_id!r}"
            ) from None
        body_id, value = self._open_record(blob, kind, slot)
        if body_id != record_id:
            raise DeviceBioError(Reason.RECORD_SWAPPED, f"{kind} record holds another id")
        return value

    def _open_record(self, blob: bytes, kind: str, slot: bytes) -> tuple[str, Any]:
        head = len(RECORD_MAGIC) + SLOT_SIZE
        if len(blob) > _MAX_RECORD or len(blob) < head or not blob.startswith(RECORD_MAGIC):
            raise DeviceBioError(Reason.RECORD_CORRUPT, f"{kind} record is truncated or not ours")
        if not hmac.compare_digest(blob[len(RECORD_MAGIC) : head], slot):
            raise DeviceBioError(
                Reason.RECORD_SWAPPED, f"the file in this {kind} slot belongs to another record"
            )
        try:
            plaintext = open_sealed(self._seal_key, blob[head:], self._aad(kind, slot))
        except OpenFailed:
            raise DeviceBioError(
                Reason.RECORD_TAMPERED, f"{kind} record failed authentication"
            ) from None
        try:
            body = cbor2.loads(plaintext)
        except Exception:
            # Authenticated but undecodable: written by a broken writer, not an attacker.
            raise DeviceBioError(Reason.RECORD_CORRUPT, f"{kind} record is not CBOR") from None
        if not isinstance(body, dict) or body.get("v") != SCHEMA_VERSION:
            raise DeviceBioError(Reason.SCHEMA_UNSUPPORTED, f"{kind} record schema unsupported")
        record_id = body.get("id")
        if not isinstance(record_id, str) or not hmac.compare_digest(
            self._slot(kind, record_id), slot
        ):
            raise DeviceBioError(Reason.RECORD_SWAPPED, f"{kind} record id does not fit its slot")
        return record_id, body.get("data")

    def exists(self, kind: str, record_id: str) -> bool:
        _check_name("kind", kind)
        _check_name("record id", record_id)
        return self._record_path(kind, self._slot(kind, record_id)).is_file()

    def delete(self, kind: str, record_id: str) -> None:
        _check_name("kind", kind)
        _check_name("record id", record_id)
        with self.exclusive():
            atomic.remove_durably(self._record_path(kind, self._slot(kind, record_id)))

    def ids(self, kind: str) -> list[str]:
        """Ids of the records of one kind. Every record is opened, so a bad one raises."""
        _check_name("kind", kind)
        kind_dir = self.path / kind
        if not kind_dir.is_dir():
            return []
        out = []
        for path in kind_dir.iterdir():
            if path.name.startswith(".") or len(path.name) != 2 * SLOT_SIZE:
                continue
            try:
                slot = bytes.fromhex(path.name)
            except ValueError:
                continue
            out.append(self._open_record(path.read_bytes(), kind, slot)[0])
        return sorted(out)

    @property
    def device_secret(self) -> bytes:
        """32 random bytes created with the vault; the root of per-RP device identifiers."""
        return records.check_device_secret(self.get(records.Kind.DEVICE, records.DEVICE_SECRET_ID))

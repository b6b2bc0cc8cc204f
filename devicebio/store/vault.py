"""The vault: every piece of device state, sealed at rest.

Layout of a vault directory (0700)::

    vault.hdr                 CBOR header: format, schema version, vault id, KDF parameters,
                              and a sealed check value that tells a wrong key from a tampered record
    vault.lock                advisory lock serialising writers
    vault.manifest            sealed list of every record and the version it was last written at
    vault.counter             the default :class:`MonotonicCounter` (see below)
    <kind>/<slot>             one record; <slot> is a keyed hash of (kind, id), so file names do
                              not reveal user names

A record file is ``MAGIC | slot(16) | nonce(24) | XChaCha20-Poly1305 ciphertext`` whose
associated data binds the vault id, the kind, the id and the schema version: a record copied
to another slot, another kind or another vault does not open. Writes go through
:func:`devicebio.protocol.files.atomic_write`, so an interrupted write leaves the previous
record intact.

Rollback. Every write is one step of a monotonically numbered history: the record body carries
the step number it was written at (``seq``), and the sealed manifest lists every record with
its step. A record file put back from an older copy has an older step than the manifest says
(RECORD_ROLLED_BACK); a deleted one is still listed (RECORD_MISSING); a deleted one put back
is not listed and stays deleted. The manifest's own step is checked against a
:class:`MonotonicCounter`, so an older manifest is caught too, as far as the counter is out of
the attacker's reach.

Crash safety of that history: a write renames the record first and the manifest second. A
crash between them leaves one record whose step is exactly one past the manifest's; the next
writer (or the next open) adopts it, since no attacker can make a sealed record with a step
that was never allocated.

What a vault cannot do in pure Python (see docs/threat-model.md): it cannot stop an attacker
who can already run code as the user from reading the key while the vault is open, and it
cannot detect a rollback of the whole directory, counter included, to an older copy. A counter
the user cannot rewrite closes that: a TPM 2.0 NV counter, an Android Keystore
rollback-resistant key, the Secure Enclave's anti-replay counter; plug it in as ``counter``.
"""

from __future__ import annotations

import contextlib
import errno
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
MANIFEST = "vault.manifest"
COUNTER = "vault.counter"
RECORD_MAGIC = b"DBV1"
MANIFEST_MAGIC = b"DBM1"
SLOT_SIZE = 16
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,127}$")
_MAX_RECORD = 64 * 1024 * 1024
_MAX_HEADER = 64 * 1024


class MonotonicCounter(Protocol):
    """A number that only goes up, kept where an attacker who rewrites the vault directory
    cannot put it back. The vault advances it to its manifest's step after every write and
    refuses a manifest older than it.

    The default, :class:`FileCounter` in the vault directory, catches an old manifest restored
    on its own, not a restore of the whole directory. What closes that is a counter in
    hardware: a TPM 2.0 NV counter (``TPM2_NV_Increment``), an Android Keystore key with
    rollback resistance, or the Secure Enclave's anti-replay counter (Apple platforms)."""

    def read(self) -> int: ...

    def advance(self, value: int) -> None:
        """Raise the counter to ``value``; never lower it."""
        ...


@dataclass(frozen=True)
class FileCounter:
    """A :class:`MonotonicCounter` in a file (8 bytes, big-endian, written atomically). Put it
    outside what the attacker can restore (another volume, a path backups skip) to catch a
    restored copy of the whole vault."""

    path: Path

    def read(self) -> int:
        raw = _read_regular(Path(self.path), 8, "monotonic counter")
        if raw is None:
            return 0
        if len(raw) != 8:
            raise DeviceBioError(Reason.RECORD_CORRUPT, "monotonic counter file is malformed")
        return int.from_bytes(raw, "big")

    def advance(self, value: int) -> None:
        if value > self.read():
            self._write(value)

    def _write(self, value: int) -> None:
        path = Path(self.path)
        path.parent.mkdir(mode=atomic.DIR_MODE, parents=True, exist_ok=True)
        atomic.atomic_write(path, value.to_bytes(8, "big"))


def _open_lock(path: Path) -> int:
    """The lock file, which must be a regular file (a directory or FIFO there is typed, and
    a symlink is not followed out of the vault)."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, atomic.FILE_MODE)
    except OSError as exc:
        raise DeviceBioError(
            Reason.RECORD_CORRUPT, f"vault lock: cannot open ({type(exc).__name__})"
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DeviceBioError(Reason.RECORD_CORRUPT, "vault lock is not a regular file")
    return fd


def _read_regular(path: Path, limit: int, what: str) -> bytes | None:
    """The bytes of ``path`` if it is a regular file of at most ``limit`` bytes; None if it is
    absent. A directory, FIFO, device or symlink there is RECORD_CORRUPT (opened without
    blocking and without following links, so a FIFO cannot hang the reader), and the size is
    checked before anything is read (a sparse 200 MiB file costs no memory)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as exc:
        kind = "a symlink" if exc.errno == errno.ELOOP else type(exc).__name__
        raise DeviceBioError(Reason.RECORD_CORRUPT, f"{what}: {kind} is not a record") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise DeviceBioError(Reason.RECORD_CORRUPT, f"{what} is not a regular file")
        if st.st_size > limit:
            raise DeviceBioError(Reason.RECORD_CORRUPT, f"{what} is larger than {limit} bytes")
        chunks, total = [], 0
        while chunk := os.read(fd, min(1 << 20, limit + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:  # grew while being read
                raise DeviceBioError(Reason.RECORD_CORRUPT, f"{what} is larger than {limit} bytes")
        return b"".join(chunks)
    except OSError as exc:
        raise DeviceBioError(
            Reason.RECORD_CORRUPT, f"{what}: cannot read ({type(exc).__name__})"
        ) from None
    finally:
        os.close(fd)


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

    def __init__(
        self,
        path: Path,
        vault_id: bytes,
        master: bytes,
        counter: MonotonicCounter | None = None,
    ) -> None:
        self.path = path
        self.vault_id = vault_id
        self._seal_key = subkey(master, b"record-seal")
        self._slot_key = subkey(master, b"record-slot")
        self._check_key = subkey(master, b"header-check")
        self._manifest_key = subkey(master, b"manifest-seal")
        self.counter: MonotonicCounter = counter or FileCounter(path / COUNTER)
        self._lock_owner = threading.RLock()
        self._lock_depth = 0

    # ---- opening -------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        key_provider: KeyProvider,
        *,
        counter: MonotonicCounter | None = None,
    ) -> Vault:
        """A new vault at ``path``; ``counter``: where its history's step is kept (default: a
        file in the vault, see :class:`MonotonicCounter`)."""
        root = Path(path)
        if (root / HEADER).exists():
            raise DeviceBioError(Reason.VAULT_EXISTS, f"a vault already exists at {root}")
        root.mkdir(mode=atomic.DIR_MODE, parents=True, exist_ok=True)
        os.chmod(root, atomic.DIR_MODE)
        vault_id = nacl.utils.random(16)
        params = key_provider.new_params()
        master = key_provider.derive(params, vault_id)
        vault = cls(root, vault_id, master, counter)
        header = {
            "format": FORMAT,
            "v": SCHEMA_VERSION,
            "id": vault_id,
            "kdf": params,
            "check": seal(vault._check_key, b"devicebio-vault-ok", vault_id),
        }
        with vault.exclusive():
            atomic.atomic_write(root / HEADER, cbor2.dumps(header, canonical=True))
            # An external counter may already be ahead (a counter reused for a new vault).
            vault._write_manifest({"n": vault.counter.read(), "r": {}})
        vault.put(
            records.Kind.DEVICE,
            records.DEVICE_SECRET_ID,
            nacl.utils.random(records.DEVICE_SECRET_SIZE),
        )
        return vault

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        key_provider: KeyProvider,
        *,
        counter: MonotonicCounter | None = None,
    ) -> Vault:
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
        vault = cls(root, header["id"], master, counter)
        try:
            open_sealed(vault._check_key, header["check"], header["id"])
        except OpenFailed:
            raise DeviceBioError(
                Reason.WRONG_KEY, "the key or passphrase does not open this vault"
            ) from None
        with vault.exclusive():
            for kind_dir in vault._kind_dirs():
                atomic.remove_stale_temps(kind_dir)
            if _read_regular(root / MANIFEST, _MAX_RECORD, "vault manifest") is None:
                vault._adopt_legacy()
            vault._recover(full=True)
        return vault

    def _kind_dirs(self) -> list[Path]:
        # Real directories only: a symlink here must not make open() delete (or read) files
        # elsewhere on the system.
        return [
            p
            for p in self.path.iterdir()
            if not p.is_symlink() and p.is_dir() and _NAME.match(p.name)
        ]

    def _record_files(self) -> Iterator[tuple[str, bytes, Path]]:
        for kind_dir in self._kind_dirs():
            for path in kind_dir.iterdir():
                if path.name.startswith(".") or len(path.name) != 2 * SLOT_SIZE:
                    continue
                try:
                    slot = bytes.fromhex(path.name)
                except ValueError:
                    continue
                yield kind_dir.name, slot, path

    @staticmethod
    def _read_header(path: Path) -> dict[str, Any]:
        raw = _read_regular(path, _MAX_HEADER, "vault header")
        if raw is None:
            raise DeviceBioError(Reason.VAULT_NOT_FOUND, f"cannot read {path}")
        try:
            header = cbor2.loads(raw)
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
            fd = _open_lock(self.path / LOCK)
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
        slot = self._slot(kind, record_id)
        with self.exclusive():
            manifest = self._manifest()
            self._recover(manifest=manifest)
            seq = manifest["n"] + 1
            blob = self._seal_record(kind, record_id, slot, value, seq)
            kind_dir = self.path / kind
            if kind_dir.is_symlink():
                raise DeviceBioError(Reason.RECORD_CORRUPT, f"{kind}: a symlink, not the vault's")
            if not kind_dir.is_dir():
                atomic.make_private_dir(kind_dir)
                atomic.fsync_dir(self.path)
            # Record first, manifest second: see the module docstring for a crash in between.
            atomic.atomic_write(self._record_path(kind, slot), blob)
            manifest["r"][_key(kind, slot)] = [seq, record_id]
            manifest["n"] = seq
            self._write_manifest(manifest)

    def _seal_record(self, kind: str, record_id: str, slot: bytes, value: Any, seq: int) -> bytes:
        try:
            plaintext = cbor2.dumps(
                {"v": SCHEMA_VERSION, "id": record_id, "seq": seq, "data": value}
            )
        except Exception as exc:
            raise DeviceBioError(
                Reason.INVALID_ARGUMENT, f"record is not CBOR-encodable: {type(exc).__name__}"
            ) from None
        return RECORD_MAGIC + slot + seal(self._seal_key, plaintext, self._aad(kind, slot))

    def get(self, kind: str, record_id: str) -> Any:
        _check_name("kind", kind)
        _check_name("record id", record_id)
        try:
            return self._get(kind, record_id)
        except _Stale:
            # A writer may be between its two renames: look again holding the lock.
            with self.exclusive():
                self._recover()
                try:
                    return self._get(kind, record_id)
                except _Stale as stale:
                    raise stale.error from None

    def _get(self, kind: str, record_id: str) -> Any:
        slot = self._slot(kind, record_id)
        blob = _read_regular(self._record_path(kind, slot), _MAX_RECORD, f"{kind} record")
        entry = self._manifest()["r"].get(_key(kind, slot))
        if blob is None:
            if entry is not None:
                raise _Stale(
                    Reason.RECORD_MISSING, f"{kind} record {record_id!r} was deleted outside"
                )
            raise DeviceBioError(Reason.RECORD_NOT_FOUND, f"no {kind} record {record_id!r}")
        body_id, seq, value = self._open_record(blob, kind, slot)
        if body_id != record_id:
            raise DeviceBioError(Reason.RECORD_SWAPPED, f"{kind} record holds another id")
        if entry is None or entry[0] != seq:
            raise _Stale(
                Reason.RECORD_ROLLED_BACK,
                f"{kind} record is not the version the vault last wrote (restored from a copy?)",
            )
        return value

    def _open_record(self, blob: bytes, kind: str, slot: bytes) -> tuple[str, int | None, Any]:
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
        seq = body.get("seq")
        if seq is not None and (type(seq) is not int or seq < 1):
            raise DeviceBioError(Reason.RECORD_CORRUPT, f"{kind} record has a bad version")
        return record_id, seq, body.get("data")

    def exists(self, kind: str, record_id: str) -> bool:
        """Whether the vault holds this record: what its manifest lists, not which files are
        there (a deleted file is still held, and reading it is RECORD_MISSING)."""
        _check_name("kind", kind)
        _check_name("record id", record_id)
        return _key(kind, self._slot(kind, record_id)) in self._manifest()["r"]

    def delete(self, kind: str, record_id: str) -> None:
        _check_name("kind", kind)
        _check_name("record id", record_id)
        slot = self._slot(kind, record_id)
        with self.exclusive():
            manifest = self._manifest()
            self._recover(manifest=manifest)
            if manifest["r"].pop(_key(kind, slot), None) is not None:
                manifest["n"] += 1
                self._write_manifest(manifest)
            # After the manifest: a crash here leaves an unlisted file, removed on next open.
            atomic.remove_durably(self._record_path(kind, slot))

    def ids(self, kind: str) -> list[str]:
        """Ids of the records of one kind. Every record is opened, so a bad one raises."""
        _check_name("kind", kind)
        prefix = f"{kind}/"
        listed = [
            entry[1] for key, entry in self._manifest()["r"].items() if key.startswith(prefix)
        ]
        for record_id in listed:
            self.get(kind, record_id)
        return sorted(listed)

    # ---- the manifest ----------------------------------------------------------------------

    def _manifest_aad(self) -> bytes:
        return cbor2.dumps([FORMAT, SCHEMA_VERSION, self.vault_id, "manifest"])

    def _manifest(self) -> dict[str, Any]:
        blob = _read_regular(self.path / MANIFEST, _MAX_RECORD, "vault manifest")
        if blob is None:
            raise DeviceBioError(
                Reason.RECORD_MISSING, "the vault manifest was deleted (or never written)"
            )
        if not blob.startswith(MANIFEST_MAGIC):
            raise DeviceBioError(Reason.RECORD_CORRUPT, "vault manifest is not ours")
        try:
            plaintext = open_sealed(
                self._manifest_key, blob[len(MANIFEST_MAGIC) :], self._manifest_aad()
            )
        except OpenFailed:
            raise DeviceBioError(
                Reason.RECORD_TAMPERED, "vault manifest failed authentication"
            ) from None
        try:
            manifest = cbor2.loads(plaintext)
        except Exception:
            raise DeviceBioError(Reason.RECORD_CORRUPT, "vault manifest is not CBOR") from None
        ok = (
            isinstance(manifest, dict)
            and type(manifest.get("n")) is int
            and isinstance(manifest.get("r"), dict)
            and all(
                isinstance(k, str)
                and isinstance(e, list)
                and len(e) == 2
                and type(e[0]) is int
                and isinstance(e[1], str)
                for k, e in manifest["r"].items()
            )
        )
        if not ok:
            raise DeviceBioError(Reason.RECORD_CORRUPT, "vault manifest is malformed")
        if manifest["n"] < self.counter.read():
            raise DeviceBioError(
                Reason.RECORD_ROLLED_BACK,
                "the vault manifest is older than the vault's monotonic counter "
                "(restored from a copy?)",
            )
        return manifest

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        plaintext = cbor2.dumps(manifest, canonical=True)
        blob = MANIFEST_MAGIC + seal(self._manifest_key, plaintext, self._manifest_aad())
        atomic.atomic_write(self.path / MANIFEST, blob)
        self.counter.advance(manifest["n"])

    def _recover(self, *, manifest: dict[str, Any] | None = None, full: bool = False) -> None:
        """Under the lock: adopt the one record a crashed writer renamed but did not list (its
        step is the manifest's plus one), and, when ``full``, remove unlisted record files (a
        crashed delete, or a deleted record put back). Without ``full`` only files written
        since the manifest are looked at, which keeps every write cheap."""
        manifest = manifest if manifest is not None else self._manifest()
        since = (self.path / MANIFEST).stat().st_mtime_ns
        for kind, slot, path in list(self._record_files()):
            key = _key(kind, slot)
            st = path.lstat()
            if not full and st.st_mtime_ns < since:
                continue
            if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_RECORD:
                continue  # reading it says what is wrong
            try:
                record_id, seq, _ = self._open_record(path.read_bytes(), kind, slot)
            except DeviceBioError:
                continue
            if seq == manifest["n"] + 1:
                manifest["r"][key] = [seq, record_id]
                manifest["n"] = seq
                self._write_manifest(manifest)
            elif full and seq is not None and key not in manifest["r"]:
                atomic.remove_durably(path)

    def _adopt_legacy(self) -> None:
        """A vault written before the manifest existed: list every record once (each is
        rewritten with its step). A vault that had a manifest (its counter moved, or a record
        carries a step) is not legacy: its manifest was deleted, an integrity error."""
        deleted = DeviceBioError(Reason.RECORD_MISSING, "the vault manifest was deleted")
        if self.counter.read() > 0:
            raise deleted
        found = []
        for kind, slot, path in self._record_files():
            raw = _read_regular(path, _MAX_RECORD, f"{kind} record")
            if raw is None:
                continue
            record_id, seq, value = self._open_record(raw, kind, slot)
            if seq is not None:
                raise deleted
            found.append((kind, slot, record_id, value))
        # Every record rewritten with its step first, the manifest last: a crash in between
        # leaves no manifest and stepped records, which the next open refuses (as it would
        # a deleted manifest) instead of losing records.
        manifest: dict[str, Any] = {"n": 0, "r": {}}
        for kind, slot, record_id, value in found:
            seq = manifest["n"] + 1
            blob = self._seal_record(kind, record_id, slot, value, seq)
            atomic.atomic_write(self._record_path(kind, slot), blob)
            manifest["r"][_key(kind, slot)] = [seq, record_id]
            manifest["n"] = seq
        self._write_manifest(manifest)

    @property
    def device_secret(self) -> bytes:
        """32 random bytes created with the vault; the root of per-RP device identifiers."""
        return records.check_device_secret(self.get(records.Kind.DEVICE, records.DEVICE_SECRET_ID))


def _key(kind: str, slot: bytes) -> str:
    return f"{kind}/{slot.hex()}"


class _Stale(DeviceBioError):
    """A record that disagrees with the manifest: final only once the lock is held."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(reason, message)
        self.error = DeviceBioError(reason, message)

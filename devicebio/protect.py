"""Template protection: a per-enrolment secret transform that keeps matching exact.

Every enrolment gets its own :class:`TemplateKey`, a 32-byte random seed kept in the vault.
The seed determines a Haar-random orthonormal matrix ``Q`` (128 x 128) and an offset ``t``
(128 standard normals); a template is stored as ``Q @ x + t`` and a probe is transformed
with the same key before comparison. ``|(Q a + t) - (Q b + t)| = |Q (a - b)| = |a - b|``:
every Euclidean distance, hence every decision, FAR and FRR, is what it was on raw
embeddings, up to float32 rounding (~1e-7; the benchmark measures it on LFW).

What this buys (ISO/IEC 24745's goals, against someone who does **not** hold the seed):

- *renewability*: enrolling again with a new key yields a new template; the old one is
  useless against probes transformed with the new key.
- *unlinkability*: the same face enrolled under two keys (two apps, two devices, before and
  after a reset) gives two templates that look unrelated. ``benchmarks/template_protection.py``
  measures it with Gomez-Barrero et al.'s D<->sys (IEEE TIFS 2018).

Why the offset ("bias"): a rotation alone hides everything about a vector except its length,
``|Q x| = |x|`` under every key, and a dlib embedding's length is personal enough to link two
enrolments (measured on LFW: D<->sys ~0.28 against ~0.1 for indistinguishable scores). With
``t ~ N(0, I)``, ``|Q x + t|^2 = |x|^2 + |t|^2 + 2 t.Qx`` where ``|t|^2`` alone varies by ~16
between keys while ``|x|^2`` is ~1; since ``Q x + t`` is isotropic for an attacker who knows
neither ``Q`` nor ``t``, that length is the only thing he could use, and it is drowned. A unit
offset keeps the stored components ~1, so float32 rounding stays ~1e-7. Mean-centring before
the rotation (the other candidate) was measured and does not help: the rotation invariant
``|x - m|`` is as personal as ``|x|``; it would also tie templates to one model's statistics.

What it does **not** buy: the transform is invertible by design, so anyone who holds the seed
-- i.e. anyone who can open the vault -- recovers the raw embedding. Irreversibility rests on
the vault's encryption, not on this transform. Templates of ONE enrolment share a key, so
their mutual distances are visible to whoever sees them (that is what matching needs).

Why the matrix comes from SHAKE-256 and not ``numpy.random``:

- the seed is 256 bits and every bit counts: ``np.random.seed(small_int)`` (Mersenne Twister,
  32-bit seed) allows only 2**32 keys, which an attacker holding a template and a photo of
  its owner can simply enumerate; and MT19937's state is recoverable from its output, so it
  is no CSPRNG;
- the stream is *our* specification (domain-separated SHAKE-256 -> 53-bit uniforms ->
  Box-Muller), so the same seed gives the same transform on every numpy version and platform;
  numpy makes no promise that ``Generator.standard_normal`` keeps its stream across releases,
  and a changed stream would silently turn every stored template into garbage. The QR runs
  in plain numpy (see :func:`_haar_orthogonal`), so no LAPACK build enters; a different libm
  or SIMD path can still change the last bits of ``Q`` (~1e-15), far below float32
  resolution and harmless. A known-answer test pins the derivation.

Use::

    key = TemplateKey.new()                          # at enrolment
    templates = key.protect(embeddings)              # stored; key.to_record() beside them
    ...
    key = TemplateKey.from_record(stored_key_record)
    probes = key.protect(probe_embeddings)           # authentication, same thresholds
    ...
    new = TemplateKey.new()                          # renewal without the face
    templates = key.rekey_to(new, templates)         # then store both, drop the old key
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any

import nacl.utils
import numpy as np

from devicebio.errors import DeviceBioError, Reason
from devicebio.store.records import FaceKeyBody, check_face_key

DIM = 128
SEED_SIZE = 32
ALGORITHM = "haar-rotation+offset/shake256/v1"
_DOMAIN = b"devicebio/template-key/haar-rotation+offset/v1\x00"
_MAX_ABS = 1e6


@dataclass(frozen=True, eq=False)
class TemplateKey:
    """The secret of one enrolment. Create with :meth:`new`; store with :meth:`to_record`.

    ``repr`` never shows the seed; equality is a constant-time comparison of seeds.
    """

    _seed: bytes = field(repr=False)
    _matrix: np.ndarray = field(init=False, repr=False, compare=False)
    _offset: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self._seed, bytes) or len(self._seed) != SEED_SIZE:
            raise DeviceBioError(
                Reason.INVALID_ARGUMENT, f"a template key seed is {SEED_SIZE} bytes"
            )
        matrix, offset = _transform(self._seed, DIM)
        matrix.setflags(write=False)
        offset.setflags(write=False)
        object.__setattr__(self, "_matrix", matrix)
        object.__setattr__(self, "_offset", offset)

    @classmethod
    def new(cls) -> TemplateKey:
        """A fresh key from the OS CSPRNG (libsodium ``randombytes``)."""
        return cls(nacl.utils.random(SEED_SIZE))

    # ---- storage -------------------------------------------------------------------------

    def to_record(self) -> FaceKeyBody:
        """A CBOR-encodable value for :meth:`devicebio.store.Vault.put` (it holds the seed)."""
        return {"alg": ALGORITHM, "dim": DIM, "seed": self._seed}

    @classmethod
    def from_record(cls, obj: object) -> TemplateKey:
        """The key stored by :meth:`to_record`; anything else is a typed error.

        RECORD_CORRUPT for a malformed record, SCHEMA_UNSUPPORTED for a well-formed record of
        an algorithm or dimension this SDK does not know (e.g. written by a newer version).
        """
        body = check_face_key(obj)
        alg, dim, seed = body["alg"], body["dim"], body["seed"]
        if alg != ALGORITHM or dim != DIM:
            raise DeviceBioError(
                Reason.SCHEMA_UNSUPPORTED, "template key record uses an unknown algorithm"
            )
        if len(seed) != SEED_SIZE:
            raise DeviceBioError(Reason.RECORD_CORRUPT, "template key seed has the wrong size")
        return cls(bytes(seed))

    # ---- the transform -------------------------------------------------------------------

    def protect(self, embeddings: np.ndarray) -> np.ndarray:
        """Embedding(s) -> protected template(s): shape (128,) or (N, 128) in, same shape out,
        float32. Use it for enrolment templates and for every probe compared with them."""
        x = _check_embeddings(embeddings)
        # Rows are vectors: x Q^T applies Q to each. einsum, not BLAS: see _haar_orthogonal.
        return (_apply(x, self._matrix) + self._offset).astype(np.float32)

    def rekey_to(self, new_key: TemplateKey, protected: np.ndarray) -> np.ndarray:
        """Templates protected under this key -> the same templates under ``new_key``.

        The raw embedding is never formed: the two transforms are composed first into one
        affine map (``Q_new @ Q_old.T`` and a combined offset) and applied once. Equals
        ``new_key.protect(raw)`` to float32 rounding.
        """
        if not isinstance(new_key, TemplateKey):
            raise DeviceBioError(Reason.INVALID_ARGUMENT, "new_key must be a TemplateKey")
        p = _check_embeddings(protected)
        # raw = (p - t_old) Q_old  ->  new = raw Q_new.T + t_new  (row vectors)
        composed = np.einsum("ij,kj->ik", self._matrix, new_key._matrix)  # Q_old Q_new^T
        shift = new_key._offset - np.einsum("j,jk->k", self._offset, composed)
        return (_apply(p, composed.T) + shift).astype(np.float32)

    # ---- hygiene -------------------------------------------------------------------------

    def __repr__(self) -> str:
        return "TemplateKey(<secret>)"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TemplateKey):
            return NotImplemented
        return hmac.compare_digest(self._seed, other._seed)

    __hash__ = None  # type: ignore[assignment]  # a secret is no dictionary key

    def __reduce__(self) -> Any:
        # Pickling would copy the seed out of the vault's protection without anyone noticing.
        raise DeviceBioError(Reason.INVALID_ARGUMENT, "a TemplateKey cannot be pickled")


def _apply(x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``x @ m.T`` for one vector or a batch of rows."""
    return np.einsum("...j,kj->...k", x, m)


def _check_embeddings(embeddings: object) -> np.ndarray:
    if not isinstance(embeddings, np.ndarray):
        raise DeviceBioError(
            Reason.INVALID_ARGUMENT, f"embeddings are a numpy array, not {type(embeddings)}"
        )
    if embeddings.dtype.kind not in "fiu":
        raise DeviceBioError(Reason.INVALID_ARGUMENT, f"embeddings dtype {embeddings.dtype}")
    if not (embeddings.shape == (DIM,) or (embeddings.ndim == 2 and embeddings.shape[1] == DIM)):
        raise DeviceBioError(
            Reason.INVALID_ARGUMENT, f"embeddings are (128,) or (N, 128), not {embeddings.shape}"
        )
    x = embeddings.astype(np.float64)
    # Embeddings and templates are O(1); the bound keeps every float32 output finite.
    if not np.all(np.isfinite(x)) or (x.size and float(np.max(np.abs(x))) > _MAX_ABS):
        raise DeviceBioError(Reason.INVALID_ARGUMENT, "embeddings contain NaN, inf or huge values")
    return x


def _gaussians(seed: bytes, count: int) -> np.ndarray:
    """``count`` (even) standard normals from a domain-separated SHAKE-256 stream of ``seed``."""
    stream = hashlib.shake_256(_DOMAIN + seed).digest(8 * count)
    words = np.frombuffer(stream, dtype="<u8")
    # 53-bit uniforms in the open interval (0, 1): the +0.5 keeps log() away from 0.
    u = ((words >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / (1 << 53))
    u1, u2 = u[0::2], u[1::2]
    radius = np.sqrt(-2.0 * np.log(u1))
    angle = 2.0 * np.pi * u2
    out = np.empty(count, dtype=np.float64)
    out[0::2] = radius * np.cos(angle)
    out[1::2] = radius * np.sin(angle)
    return out


def _transform(seed: bytes, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(Q, t): the first dim*dim normals of the stream make Q, the next dim make t."""
    z = _gaussians(seed, dim * dim + dim)
    return _haar_orthogonal(z[: dim * dim].reshape(dim, dim)), z[dim * dim :].copy()


def _haar_orthogonal(g: np.ndarray) -> np.ndarray:
    """The Q of ``g = Q R`` with R's diagonal made positive, which makes Q Haar-distributed when
    ``g`` is Gaussian (Mezzadri 2007; LAPACK's own sign convention would bias it).

    Householder reflections in plain numpy (``einsum`` and broadcasting, never BLAS/LAPACK):
    the result then depends on no particular LAPACK build, and this tiny factorisation is not
    slowed 20-100x, as measured, by a multithreaded OpenBLAS fighting for busy cores.
    """
    n = g.shape[0]
    at = g.T.copy()  # row k of ``at`` is column k of g, so the slices below are contiguous
    vectors: list[np.ndarray | None] = []
    signs = np.ones(n)
    for k in range(n):
        x = at[k, k:]
        norm = float(np.sqrt(np.einsum("i,i->", x, x)))
        alpha = -norm if x[0] >= 0 else norm  # the sign that avoids cancellation
        v = x.copy()
        v[0] -= alpha
        vnorm = float(np.sqrt(np.einsum("i,i->", v, v)))
        if vnorm == 0.0:  # column already reduced (probability 0 for Gaussian input)
            vectors.append(None)
            signs[k] = 1.0 if x[0] >= 0 else -1.0
            continue
        v /= vnorm
        signs[k] = 1.0 if alpha >= 0 else -1.0  # R[k, k] = alpha
        rest = at[k + 1 :, k:]
        rest -= 2.0 * np.einsum("ij,j->i", rest, v)[:, None] * v[None, :]
        vectors.append(v)
    # Q = H_0 H_1 ... H_{n-1}: applied to I from the left, last reflection first, each H_k
    # only touches the trailing block from k on.
    q = np.eye(n)
    for k in range(n - 1, -1, -1):
        h = vectors[k]
        if h is None:
            continue
        block = q[k:, k:]
        block -= 2.0 * h[:, None] * np.einsum("i,ij->j", h, block)[None, :]
    return np.ascontiguousarray(q * signs[None, :])

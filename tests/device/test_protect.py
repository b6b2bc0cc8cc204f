"""Template protection (devicebio.protect): exact matching, secrecy of the seed, strict records."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

np = pytest.importorskip("numpy", reason="the device tests need the [device] extra (numpy)")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from devicebio.errors import DeviceBioError, Reason  # noqa: E402
from devicebio.protect import ALGORITHM, DIM, TemplateKey  # noqa: E402
from devicebio.store.vault import RawKey, Vault  # noqa: E402

SEED = bytes(range(32))
ZERO = np.zeros(DIM, np.float32)


def reason_of(fn, *args) -> Reason:
    with pytest.raises(DeviceBioError) as info:
        fn(*args)
    return info.value.reason


def dlib_like(n: int, seed: int = 0) -> np.ndarray:
    """Random vectors at the scale of dlib embeddings (norm ~1, a common mean component)."""
    rng = np.random.default_rng(seed)
    mean = rng.normal(0, 0.05, DIM)
    return (mean + rng.normal(0, 0.08, (n, DIM))).astype(np.float32)


def pairwise(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return np.linalg.norm(x[:, None, :] - x[None, :, :], axis=2)


def rotation_of(key: TemplateKey) -> np.ndarray:
    """Q, read off the public API: protect(e_i) - protect(0) is column i of Q."""
    return (key.protect(np.eye(DIM, dtype=np.float32)) - key.protect(ZERO)).T.astype(np.float64)


# ---- distances ----------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [0.09, 1.0])
def test_distances_preserved_on_random_embeddings(scale: float) -> None:
    x = (np.random.default_rng(1).normal(0, scale, (150, DIM))).astype(np.float32)
    p = TemplateKey.new().protect(x)
    assert np.max(np.abs(pairwise(x) - pairwise(p))) <= 1e-5


def test_the_transform_is_an_isometry() -> None:
    q = rotation_of(TemplateKey(SEED))
    assert np.max(np.abs(q.T @ q - np.eye(DIM))) < 1e-6


def test_single_vector_and_batch_agree_and_keep_shape() -> None:
    key = TemplateKey.new()
    x = dlib_like(5)
    before = x.copy()
    batch = key.protect(x)
    assert batch.shape == (5, DIM) and batch.dtype == np.float32
    one = key.protect(x[2])
    assert one.shape == (DIM,) and one.dtype == np.float32
    np.testing.assert_allclose(one, batch[2], atol=1e-6)
    assert key.protect(np.zeros((0, DIM), np.float32)).shape == (0, DIM)
    np.testing.assert_array_equal(x, before)  # the input is not modified


@pytest.mark.needs_lfw
def test_distances_preserved_on_real_embeddings(lfw_dir: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    from devicebio.evaluation.lfw import parse_pairs
    from devicebio.vision.pipeline import FaceCapture, FacePipeline

    _, pairs = parse_pairs(lfw_dir / "pairs.txt")
    rels = sorted({r for p in pairs[:6] for r in (p.a, p.b)})
    pipe = FacePipeline()
    emb = []
    for rel in rels:
        rgb = cv2.cvtColor(cv2.imread(str(lfw_dir / "images" / rel)), cv2.COLOR_BGR2RGB)
        result = pipe.analyze(rgb, select="center")
        assert isinstance(result, FaceCapture), rel
        emb.append(result.embedding)
    x = np.stack(emb)
    key = TemplateKey.new()
    p = key.protect(x)
    assert np.max(np.abs(pairwise(x) - pairwise(p))) <= 1e-5
    # Probe by probe, as the device compares them.
    for i in range(len(x)):
        d_raw = np.linalg.norm(x[0] - x[i])
        d_prot = np.linalg.norm(p[0] - key.protect(x[i]))
        assert abs(d_raw - d_prot) <= 1e-5


# ---- the seed -----------------------------------------------------------------------------


def test_same_seed_same_templates() -> None:
    x = dlib_like(20)
    np.testing.assert_array_equal(TemplateKey(SEED).protect(x), TemplateKey(SEED).protect(x))


def test_known_answer_pins_the_derivation() -> None:
    # The stored templates depend on this exact derivation (SHAKE-256 -> Box-Muller -> QR with
    # the sign fix); a change here would silently break every enrolment. Values computed by
    # this implementation on numpy 2.4; the tolerance allows other libm/LAPACK builds.
    key = TemplateKey(SEED)
    offset = key.protect(ZERO)
    np.testing.assert_allclose(
        offset[:4],
        [-0.691478431224823, 0.8811068534851074, 1.5796493291854858, 0.8595862984657288],
        atol=1e-6,
    )
    first_column = rotation_of(key)[:4, 0]
    np.testing.assert_allclose(
        first_column,
        [0.11383557319641113, 0.07540929317474365, 0.01008760929107666, 0.1069902777671814],
        atol=1e-5,
    )


def test_different_seeds_give_unrelated_templates() -> None:
    x = dlib_like(400)
    k1, k2 = TemplateKey.new(), TemplateKey.new()
    p1, p2 = k1.protect(x), k2.protect(x)
    # Per coordinate, across faces: correlation between the two keys' templates.
    c1, c2 = p1 - p1.mean(axis=0), p2 - p2.mean(axis=0)
    r = float(np.sum(c1 * c2) / np.sqrt(np.sum(c1 * c1) * np.sum(c2 * c2)))
    assert abs(r) < 0.05, r  # independent: std ~ 1/sqrt(400*128) = 0.0025
    same = k1.protect(x)
    assert np.array_equal(same, p1)
    # And a template under one key is no match for the same face under another key.
    cross = np.linalg.norm(p1 - p2, axis=1)
    assert cross.min() > 5.0, cross.min()  # dlib's accept threshold is 0.6


def test_the_norm_of_a_template_does_not_reveal_the_embedding_norm() -> None:
    # A rotation alone keeps |x|; the secret offset is what hides it (see the module doc).
    rng = np.random.default_rng(3)
    x = dlib_like(60, seed=3) * rng.uniform(0.5, 1.5, (60, 1)).astype(np.float32)
    keys = [TemplateKey.new() for _ in range(60)]
    raw_norm = np.linalg.norm(x, axis=1)
    prot_norm = np.array([np.linalg.norm(k.protect(v)) for k, v in zip(keys, x, strict=True)])
    rot_norm = np.array(
        [np.linalg.norm(k.protect(v) - k.protect(ZERO)) for k, v in zip(keys, x, strict=True)]
    )
    np.testing.assert_allclose(rot_norm, raw_norm, rtol=1e-5)  # what the offset is for
    r = np.corrcoef(raw_norm, prot_norm)[0, 1]
    assert abs(r) < 0.5, r  # ~0 expected; 0.5 is > 3.5 standard errors with 60 keys


# ---- re-keying ----------------------------------------------------------------------------


def test_rekey_equals_protecting_the_raw_embedding_under_the_new_key() -> None:
    x = dlib_like(30)
    old, new = TemplateKey.new(), TemplateKey.new()
    rekeyed = old.rekey_to(new, old.protect(x))
    assert rekeyed.dtype == np.float32 and rekeyed.shape == x.shape
    assert np.max(np.abs(rekeyed - new.protect(x))) <= 1e-5
    one = old.rekey_to(new, old.protect(x[0]))
    assert one.shape == (DIM,) and np.max(np.abs(one - new.protect(x[0]))) <= 1e-5
    back = new.rekey_to(old, rekeyed)
    assert np.max(np.abs(back - old.protect(x))) <= 1e-5


def test_rekeyed_templates_still_match_and_old_ones_do_not() -> None:
    x = dlib_like(2)
    old, new = TemplateKey.new(), TemplateKey.new()
    stored = old.rekey_to(new, old.protect(x[0]))
    probe = new.protect(x[1])
    assert abs(np.linalg.norm(stored - probe) - np.linalg.norm(x[0] - x[1])) <= 1e-5
    assert np.linalg.norm(old.protect(x[0]) - probe) > 5.0  # the revoked template is useless


# ---- storage ------------------------------------------------------------------------------


def test_record_round_trip_through_a_vault(tmp_path: Path) -> None:
    key = TemplateKey.new()
    vault = Vault.create(tmp_path / "v", RawKey(b"\x02" * 32))
    vault.put("template-key", "alice.face.1", key.to_record())
    again = TemplateKey.from_record(vault.get("template-key", "alice.face.1"))
    assert again == key and again != TemplateKey.new()
    x = dlib_like(3)
    np.testing.assert_array_equal(again.protect(x), key.protect(x))
    record = key.to_record()
    assert record["alg"] == ALGORITHM and record["dim"] == DIM and len(record["seed"]) == 32


GOOD = {"alg": ALGORITHM, "dim": DIM, "seed": SEED}


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (None, Reason.RECORD_CORRUPT),
        (b"x" * 32, Reason.RECORD_CORRUPT),
        ([ALGORITHM, DIM, SEED], Reason.RECORD_CORRUPT),
        ({}, Reason.RECORD_CORRUPT),
        ({"alg": ALGORITHM, "dim": DIM}, Reason.RECORD_CORRUPT),
        ({**GOOD, "extra": 1}, Reason.RECORD_CORRUPT),
        ({**GOOD, "seed": SEED.hex()}, Reason.RECORD_CORRUPT),
        ({**GOOD, "seed": bytearray(SEED)}, Reason.RECORD_CORRUPT),
        ({**GOOD, "seed": SEED[:31]}, Reason.RECORD_CORRUPT),
        ({**GOOD, "seed": SEED + b"\x00"}, Reason.RECORD_CORRUPT),
        ({**GOOD, "dim": True}, Reason.RECORD_CORRUPT),
        ({**GOOD, "dim": 128.0}, Reason.RECORD_CORRUPT),
        ({**GOOD, "alg": ALGORITHM.encode()}, Reason.RECORD_CORRUPT),
        ({**GOOD, "alg": "haar-rotation/shake256/v2"}, Reason.SCHEMA_UNSUPPORTED),
        ({**GOOD, "dim": 512}, Reason.SCHEMA_UNSUPPORTED),
    ],
)
def test_malformed_records_are_typed_errors(record: object, reason: Reason) -> None:
    assert reason_of(TemplateKey.from_record, record) == reason


_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(max_size=40)
    | st.binary(max_size=40)
)
_values = st.recursive(
    _leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)
_near_records = st.fixed_dictionaries(
    {},
    optional={
        "alg": st.sampled_from([ALGORITHM, "", "x"]) | _values,
        "dim": st.sampled_from([DIM, 0, -1, 2**70]) | _values,
        "seed": st.binary(min_size=30, max_size=34) | _values,
        "extra": _values,
    },
)


@settings(max_examples=200, deadline=None)
@given(st.one_of(_values, _near_records))
def test_from_record_never_raises_anything_but_the_typed_error(obj: object) -> None:
    try:
        key = TemplateKey.from_record(obj)
    except DeviceBioError as exc:
        assert exc.reason in (Reason.RECORD_CORRUPT, Reason.SCHEMA_UNSUPPORTED)
    else:
        assert obj == {"alg": ALGORITHM, "dim": DIM, "seed": key.to_record()["seed"]}


# ---- misuse -------------------------------------------------------------------------------


def test_repr_and_str_hide_the_seed() -> None:
    seed = bytes.fromhex("ab" * 32)
    key = TemplateKey(seed)
    for text in (repr(key), str(key), f"{key}", repr([key])):
        assert "ab" * 4 not in text and "\\xab" not in text and "171" not in text
        assert text.count("TemplateKey") >= 1


def test_keys_cannot_be_pickled_or_hashed() -> None:
    key = TemplateKey.new()
    assert reason_of(pickle.dumps, key) == Reason.INVALID_ARGUMENT
    with pytest.raises(TypeError):
        hash(key)


@pytest.mark.parametrize("seed", [b"", b"\x00" * 31, b"\x00" * 33, "a" * 32, bytearray(32), None])
def test_bad_seed(seed: object) -> None:
    assert reason_of(TemplateKey, seed) == Reason.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "bad",
    [
        [0.0] * DIM,
        np.zeros(127, np.float32),
        np.zeros((2, 127), np.float32),
        np.zeros((1, 2, DIM), np.float32),
        np.zeros((), np.float32),
        np.full(DIM, np.nan, np.float32),
        np.full((2, DIM), np.inf, np.float32),
        np.full(DIM, 1e30),
        np.full(DIM, 2**62, np.int64),
        np.zeros(DIM, np.complex64),
        np.zeros(DIM, object),
        np.zeros(DIM, bool),
        np.array(["x"] * DIM),
    ],
)
def test_bad_embeddings_are_invalid_argument(bad: object) -> None:
    key, other = TemplateKey.new(), TemplateKey.new()
    assert reason_of(key.protect, bad) == Reason.INVALID_ARGUMENT
    assert reason_of(key.rekey_to, other, bad) == Reason.INVALID_ARGUMENT


def test_rekey_needs_a_key() -> None:
    key = TemplateKey.new()
    assert reason_of(key.rekey_to, SEED, key.protect(ZERO)) == Reason.INVALID_ARGUMENT

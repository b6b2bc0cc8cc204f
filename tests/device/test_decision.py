"""The one face decision (devicebio.decision): the rule, its threshold source, fail-closed input."""

from __future__ import annotations

import pytest

np = pytest.importorskip("numpy", reason="the device tests need the [device] extra (numpy)")


from devicebio import decision  # noqa: E402
from devicebio.authenticator import AuthPolicy  # noqa: E402
from devicebio.errors import DeviceBioError, Reason  # noqa: E402
from devicebio.vision.models import MODELS  # noqa: E402


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, 128)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _near(base: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
    x = base + scale * rng.standard_normal(base.shape).astype(np.float32) / np.sqrt(128)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def test_the_rule_is_the_mean_of_each_probes_closest_template() -> None:
    rng = np.random.default_rng(7)
    probes, templates = _unit(rng, 3), _unit(rng, 3)
    by_hand = np.mean([min(float(np.linalg.norm(p - t)) for t in templates) for p in probes])
    batch = decision.fused_distances(probes[None], templates[None])
    paired = decision.paired_fused_distances(probes[None], templates[None])
    assert abs(batch[0, 0] - by_hand) < 1e-6 and abs(paired[0] - by_hand) < 1e-6
    # decide() is that score against the threshold, on both sides of it
    assert decision.decide(probes, templates, decision.Policy(by_hand + 1e-4, 0.4)) is (
        decision.Verdict.ACCEPT
    )
    assert decision.decide(probes, templates, decision.Policy(by_hand - 1e-4, 0.4)) is (
        decision.Verdict.REFUSE
    )


def test_one_lucky_frame_does_not_decide() -> None:
    """The mean over frames, not the best frame: one frame at a template is not enough."""
    rng = np.random.default_rng(8)
    templates = _unit(rng, 3)
    probes = np.concatenate([templates[:1], _unit(rng, 2)])
    policy = decision.Policy.of()
    assert decision.decide(probes[:1], templates, policy) is decision.Verdict.ACCEPT
    assert decision.decide(probes, templates, policy) is decision.Verdict.REFUSE


def test_batch_scores_match_single_decisions() -> None:
    rng = np.random.default_rng(9)
    probe_sets = np.stack([_unit(rng, 3) for _ in range(4)])
    template_sets = np.stack([_unit(rng, 3) for _ in range(5)])
    full = decision.fused_distances(probe_sets, template_sets)
    for i in range(4):
        for j in range(5):
            one = decision.paired_fused_distances(probe_sets[i : i + 1], template_sets[j : j + 1])
            assert abs(full[i, j] - one[0]) < 1e-9


def test_consistency_and_continuity_use_the_same_person_threshold() -> None:
    rng = np.random.default_rng(10)
    policy = decision.Policy.of()
    person = _unit(rng, 1)[0]
    same = _near(np.repeat(person[None], 3, 0), rng, 0.1)
    assert decision.consistent(same, policy)
    swapped = np.concatenate([same[:2], _unit(rng, 1)])
    assert not decision.consistent(swapped, policy)
    assert decision.continues(same[2], same[:2], policy)
    assert decision.continues(same[0], np.zeros((0, 128), np.float32), policy)
    assert not decision.continues(swapped[2], same[:2], policy)
    # the pair check reads same_person, not the transaction threshold
    gap = float(np.linalg.norm(same[0] - same[1]))
    loose = decision.Policy(threshold=gap / 2, same_person=gap + 1e-3)
    tight = decision.Policy(threshold=1.9, same_person=gap - 1e-3)
    assert decision.continues(same[1], same[:1], loose)
    assert not decision.continues(same[1], same[:1], tight)


def test_no_probes_fail_closed_and_bad_input_is_a_typed_error() -> None:
    policy = decision.Policy.of()
    templates = _unit(np.random.default_rng(11), 3)
    assert decision.decide(np.zeros((0, 128)), templates, policy) is decision.Verdict.REFUSE
    for bad in (np.full((1, 128), np.nan), np.zeros((1, 64)), np.zeros((1, 2, 128))):
        with pytest.raises(DeviceBioError) as err:
            decision.decide(bad, templates, policy)
        assert err.value.reason is Reason.INVALID_ARGUMENT


def test_the_threshold_travels_with_the_models_spec() -> None:
    spec = MODELS[decision.EMBEDDER]
    assert spec.operating_points, "the embedder must carry its operating points"
    first = spec.operating_points[0]
    assert decision.Policy.of() == decision.Policy(first.threshold, first.same_person, first.name)
    for point in spec.operating_points:
        chosen = AuthPolicy(operating_point=point.name).decision_policy()
        assert chosen == decision.Policy(point.threshold, point.same_person, point.name)
        assert point.command.startswith("devicebio eval")
        assert point.threshold < point.same_person  # a fused transaction is the stricter test
    custom = AuthPolicy(threshold=0.3).decision_policy()
    assert custom == decision.Policy(0.3, first.same_person, None)


def test_the_default_meets_nist_800_63b_4_as_measured() -> None:
    """The figures the spec carries (printed by ``devicebio eval transactions``) say the
    default meets FMR <= 1e-4 out of sample, upper confidence bound included."""
    point = MODELS[decision.EMBEDDER].operating_point(None)
    assert point.name == "nist-800-63b-4"
    assert point.transaction_fmr is not None and point.transaction_fmr_ci is not None
    assert point.transaction_fmr <= 1e-4 and point.transaction_fmr_ci[1] <= 1e-4


@pytest.mark.parametrize(
    "kwargs",
    [
        {"operating_point": "no-such-point"},
        {"threshold": 0.3, "operating_point": MODELS[decision.EMBEDDER].operating_points[0].name},
        {"threshold": float("nan")},
        {"threshold": 0.0},
        {"threshold": 2.5},
    ],
)
def test_bad_policies_are_refused(kwargs: dict) -> None:
    with pytest.raises(DeviceBioError) as err:
        AuthPolicy(**kwargs)
    assert err.value.reason is Reason.INVALID_ARGUMENT

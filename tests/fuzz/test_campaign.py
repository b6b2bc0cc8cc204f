"""The fuzz campaign itself, at a CI-sized budget: it runs, reaches the checks past the
signature (its unmutated controls are accepted), and finds no untyped error or wrong
acceptance. The full campaign (over a million inputs) is `tox -e fuzz`."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

CAMPAIGN = Path(__file__).resolve().parents[2] / "fuzz" / "campaign.py"


@pytest.fixture(scope="module")
def campaign():
    spec = importlib.util.spec_from_file_location("devicebio_fuzz_campaign", CAMPAIGN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_a_small_campaign_is_clean_and_reaches_acceptance(campaign) -> None:
    totals = {}
    for target in campaign.TARGETS:
        totals[target.name] = target(campaign.random.Random(f"ci/{target.name}")).run(150)
    for name, tally in totals.items():
        assert tally.inputs == 150, name
        assert tally.untyped == 0 and tally.wrong == 0, (name, tally.examples)
    # The oracle path is exercised: every target accepted something (controls or lucky
    # mutations) and refused something, so neither branch is dead.
    assert all(t.accepted > 0 and t.refused > 0 for n, t in totals.items() if n != "Vault.get")
    assert totals["Vault.get"].refused > 0


def test_the_oracle_flags_a_wrong_acceptance(campaign, monkeypatch) -> None:
    """A verifier that accepted everything would be caught: replace verify_assertion with one
    that never refuses and the campaign must report wrong acceptances."""

    class Result:
        new_sign_count = 0

    target = campaign.AssertionTarget(campaign.random.Random("ci/oracle"))
    monkeypatch.setattr(campaign, "verify_assertion", lambda **_: Result())
    tally = target.run(60)
    assert tally.wrong > 0

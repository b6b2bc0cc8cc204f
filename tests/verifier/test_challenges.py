from __future__ import annotations

import pytest

from verifier.challenges import Challenge, Purpose, consume_challenge, issue_challenge
from verifier.errors import Reason, VerifierError
from verifier.store import SQLiteStore

T0 = 1_700_000_000.0


def _reason(exc: pytest.ExceptionInfo[VerifierError]) -> Reason:
    return exc.value.reason


def test_issue_and_consume() -> None:
    s = SQLiteStore()
    c = issue_challenge(s, user="alice", purpose=Purpose.AUTHENTICATE, now=T0)
    assert isinstance(c, Challenge)
    assert len(c.value) == 32
    assert c.expires_at == T0 + 300.0
    got = consume_challenge(s, c.value, purpose=Purpose.AUTHENTICATE, user="alice", now=T0 + 1)
    assert got == c


def test_values_are_random() -> None:
    s = SQLiteStore()
    values = {issue_challenge(s, user="u", purpose=Purpose.REGISTER).value for _ in range(50)}
    assert len(values) == 50


def test_single_use() -> None:
    s = SQLiteStore()
    c = issue_challenge(s, user="alice", purpose=Purpose.REGISTER, now=T0)
    consume_challenge(s, c.value, purpose=Purpose.REGISTER, user="alice", now=T0)
    with pytest.raises(VerifierError) as e:
        consume_challenge(s, c.value, purpose=Purpose.REGISTER, user="alice", now=T0)
    assert _reason(e) is Reason.CHALLENGE_REUSED


def test_ttl_with_injected_time() -> None:
    s = SQLiteStore()
    c = issue_challenge(s, user="alice", purpose=Purpose.REGISTER, ttl=60, now=T0)
    with pytest.raises(VerifierError) as e:
        consume_challenge(s, c.value, purpose=Purpose.REGISTER, now=T0 + 60.001)
    assert _reason(e) is Reason.CHALLENGE_EXPIRED
    # An expired attempt still burns it.
    with pytest.raises(VerifierError) as e:
        consume_challenge(s, c.value, purpose=Purpose.REGISTER, now=T0)
    assert _reason(e) is Reason.CHALLENGE_REUSED


def test_at_expiry_instant_still_valid() -> None:
    s = SQLiteStore()
    c = issue_challenge(s, user="alice", purpose=Purpose.REGISTER, ttl=60, now=T0)
    consume_challenge(s, c.value, purpose=Purpose.REGISTER, now=T0 + 60)


def test_wrong_purpose_refused_and_burnt() -> None:
    s = SQLiteStore()
    c = issue_challenge(s, user="alice", purpose=Purpose.REGISTER, now=T0)
    with pytest.raises(VerifierError) as e:
        consume_challenge(s, c.value, purpose=Purpose.AUTHENTICATE, user="alice", now=T0)
    assert _reason(e) is Reason.CHALLENGE_WRONG_PURPOSE
    with pytest.raises(VerifierError) as e:
        consume_challenge(s, c.value, purpose=Purpose.REGISTER, user="alice", now=T0)
    assert _reason(e) is Reason.CHALLENGE_REUSED


def test_wrong_user_refused() -> None:
    s = SQLiteStore()
    c = issue_challenge(s, user="alice", purpose=Purpose.AUTHENTICATE, now=T0)
    with pytest.raises(VerifierError) as e:
        consume_challenge(s, c.value, purpose=Purpose.AUTHENTICATE, user="mallory", now=T0)
    assert _reason(e) is Reason.CHALLENGE_WRONG_USER


def test_user_none_returns_stored_user() -> None:
    s = SQLiteStore()
    c = issue_challenge(s, user="alice", purpose=Purpose.AUTHENTICATE, now=T0)
    assert consume_challenge(s, c.value, purpose=Purpose.AUTHENTICATE, now=T0).user == "alice"


def test_unknown_challenge() -> None:
    s = SQLiteStore()
    for value in (b"\x00" * 32, b"short", b""):
        with pytest.raises(VerifierError) as e:
            consume_challenge(s, value, purpose=Purpose.REGISTER, now=T0)
        assert _reason(e) is Reason.CHALLENGE_UNKNOWN


@pytest.mark.parametrize("size", [0, 8, 15, -1])
def test_short_challenges_refused(size: int) -> None:
    with pytest.raises(VerifierError) as e:
        issue_challenge(SQLiteStore(), user="u", purpose=Purpose.REGISTER, size=size)
    assert _reason(e) is Reason.MALFORMED


def test_minimum_size_allowed() -> None:
    c = issue_challenge(SQLiteStore(), user="u", purpose=Purpose.REGISTER, size=16)
    assert len(c.value) == 16


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ttl": 0},
        {"ttl": -5},
        {"ttl": float("nan")},
        {"purpose": "login"},
        {"user": ""},
        {"size": 16.0},
    ],
)
def test_bad_issue_arguments(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"user": "u", "purpose": Purpose.REGISTER, **kwargs}
    with pytest.raises(VerifierError) as e:
        issue_challenge(SQLiteStore(), **args)  # type: ignore[arg-type]
    assert _reason(e) is Reason.MALFORMED


def test_purpose_accepts_plain_string() -> None:
    s = SQLiteStore()
    c = issue_challenge(s, user="u", purpose="register", now=T0)  # type: ignore[arg-type]
    assert c.purpose is Purpose.REGISTER
    consume_challenge(s, c.value, purpose="register", now=T0)  # type: ignore[arg-type]


def test_across_processes_sharing_a_database(backend) -> None:
    c = issue_challenge(backend.open(), user="alice", purpose=Purpose.REGISTER, now=T0)
    consume_challenge(backend.open(), c.value, purpose=Purpose.REGISTER, now=T0)
    with pytest.raises(VerifierError) as e:
        consume_challenge(backend.open(), c.value, purpose=Purpose.REGISTER, now=T0)
    assert _reason(e) is Reason.CHALLENGE_REUSED

"""The device CLI has no ceremony of its own: it signs and registers only through the
Authenticator's fallback verbs (which keep the security key's counter lock and clear the face
lockout), and every command family shares one exit-code contract."""

from __future__ import annotations

import ast
from pathlib import Path

from devicebio.cli import build_parser
from devicebio.cli.exits import EXIT_ENV, EXIT_REFUSED, EXIT_STATE, EXIT_USAGE, exit_code_for
from devicebio.errors import Reason
from devicebio.fallback import Fallback

CLI = Path(__file__).resolve().parents[2] / "devicebio" / "cli"
# What only the Authenticator may do: verify a fallback and sign what it verified.
CEREMONY = {"SecurityKeyFallback", "UserVerification", "AttemptLimiter", "record_fallback_success"}


def _names_used(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    used: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            fn = node.func
            used.add(fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", ""))
    return used


def test_no_command_verifies_a_fallback_or_signs_by_itself() -> None:
    modules = sorted(CLI.glob("*.py"))
    assert len(modules) >= 8  # one module per command family
    for path in modules:
        used = _names_used(path)
        allowed = {"AttemptLimiter"} if path.name == "doctor.py" else set()  # read-only status
        assert not (used & CEREMONY) - allowed, (path.name, used & CEREMONY)
        if path.name != "doctor.py":
            assert "Credentials" not in used, path.name


def test_every_reason_has_an_exit_code() -> None:
    codes = {exit_code_for(r) for r in Reason}
    assert codes == {EXIT_REFUSED, EXIT_USAGE, EXIT_STATE, EXIT_ENV}
    assert exit_code_for(Reason.PIN_WRONG) == EXIT_REFUSED
    assert exit_code_for(Reason.RECORD_TAMPERED) == EXIT_STATE


def test_the_method_choices_are_the_fallbacks() -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["authenticate", "--vault", "v", "--rp-id", "a.b", "--origin", "https://a.b",
         "--challenge=x", "--method", "security-key"]
    )  # fmt: skip
    assert Fallback(args.method) is Fallback.SECURITY_KEY
    sub = next(a for a in parser._actions if a.dest == "command")
    auth = sub.choices["authenticate"]  # type: ignore[index]
    method = next(a for a in auth._actions if a.dest == "method")
    assert list(method.choices) == ["face", *(f.value for f in Fallback)]

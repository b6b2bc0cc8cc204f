"""The challenge-bound liveness plan.

The device derives its prompt sequence from the RP's challenge and the verifier recomputes
it, so both sides must agree bit for bit: integers (milliseconds) only, stdlib only.

"""

from __future__ import annotations

import enum
import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from devicebio.protocol.encoding import invalid

LIVENESS_KIND = "active-challenge"
#: The same challenge-bound prompts, plus the passive MiniFASNet pair (devicebio/models/pad,
#: pinned by sha256 in the SDK version the extension names) run on the session's frames.
LIVENESS_KIND_PASSIVE = "active-challenge-minifasnet"
#: Every kind whose claim is bound to the challenge's plan (the verifier checks the hash).
CHALLENGE_BOUND_KINDS = frozenset({LIVENESS_KIND, LIVENESS_KIND_PASSIVE})
# v2 (issue 13): v1's five steps with a 3 s window wider than its 2 s delay spread let a
# recording answer about 1 fresh plan in 1,500 (docs/evaluation.md, "replay odds"); v2's six
# steps, 0.4-3.0 s delays and a 2.5 s window make it about 1 in 18,000.
_PLAN_DOMAIN = b"devicebio/liveness/v2\0"
_HASH_DOMAIN = b"devicebio/liveness-sequence/v2\0"
# Delays in 10 ms steps: a recording lines its responses up with a fresh plan's prompts only
# when every fresh delay falls within (window - min reaction) of the recorded one.
_DELAY_MIN_MS = 400
_DELAY_STEPS = 261  # delays 0.4-3.0 s
# The response must cross its threshold within this of its prompt: the slowest genuine
# response measured on the shared footage took 1.94 s (zub's 15 fps turns); a window wider
# than the delay spread would let the delays bind nothing.
_WINDOW_MS = 2500
DEFAULT_STEPS = 6
_MAX_STEPS = 16
_MAX_CHALLENGE = 1024


class Prompt(enum.StrEnum):
    """What the user is asked to do. Directions are the SUBJECT's own (see
    :func:`devicebio.vision.mesh.head_pose`): turn_left is positive yaw in an unmirrored frame,
    look_up is positive pitch, both relative to the subject's own neutral pose."""

    TURN_LEFT = "turn_left"
    TURN_RIGHT = "turn_right"
    LOOK_UP = "look_up"
    BLINK = "blink"


_PROMPTS = tuple(Prompt)


@dataclass(frozen=True)
class PromptStep:
    """One prompt: shown ``delay_s`` after the previous step completed (or after the
    session's neutral baseline), answered within ``window_s`` of being shown."""

    prompt: Prompt
    delay_s: float
    window_s: float


def _check_challenge(challenge: object) -> bytes:
    if not isinstance(challenge, bytes | bytearray) or not 1 <= len(challenge) <= _MAX_CHALLENGE:
        invalid(f"challenge must be 1..{_MAX_CHALLENGE} bytes")
    return bytes(challenge)


# The draw works on prompt indices into _PROMPTS; _START is "no prompt yet".
_START = len(_PROMPTS)
_IS_TURN = tuple(p in (Prompt.TURN_LEFT, Prompt.TURN_RIGHT) for p in _PROMPTS)
# _NEXT[previous][byte]: the prompt index a stream byte picks after ``previous`` (none
# twice in a row: the choices are the other prompts in _PROMPTS order, picked byte mod
# their count). A table, because the verifier draws a plan at every sign-in.
_NEXT = tuple(
    tuple(_PROMPTS.index(choices[byte % len(choices)]) for byte in range(256))
    for choices in (tuple(p for p in _PROMPTS if p is not prev) for prev in (*_PROMPTS, None))
)


_U32 = struct.Struct(">I").pack
_U16 = struct.Struct(">H").pack
_TIMES = struct.Struct(">II").pack


def _draw(data: bytes, steps: int) -> tuple[list[int], list[int]]:
    """The plan as prompt indices and delays in 10 ms steps above the minimum: the one
    derivation :func:`liveness_plan` and :func:`liveness_expectation` both read."""
    seed = hashlib.sha256(_PLAN_DOMAIN + data).digest()
    for attempt in range(256):
        stream = hashlib.sha256(seed + _U32(attempt)).digest()
        stream += hashlib.sha256(stream).digest()
        prompts: list[int] = []
        delays: list[int] = []
        previous = _START
        turned = False  # a flag in the one loop: the verifier runs this per sign-in
        for i in range(steps):
            previous = _NEXT[previous][stream[2 * i]]
            prompts.append(previous)
            delays.append((stream[2 * i + 1] * 256 + stream[32 + i]) % _DELAY_STEPS)
            turned = turned or _IS_TURN[previous]
        if steps < 2 or turned:
            return prompts, delays
    raise AssertionError("unreachable: 256 draws without a head turn")  # pragma: no cover


def liveness_plan(challenge: bytes, *, steps: int = DEFAULT_STEPS) -> tuple[PromptStep, ...]:
    """The prompt sequence for ``challenge``: deterministic, so the verifier recomputes it.

    Six steps by default: a replayed recording passes only if a fresh plan repeats its prompt
    order (1 in 970 for six steps; 1 in 322 for v1's five) AND every fresh delay lets its
    recorded response land inside the fresh window (about 1 in 19 for six steps); see
    docs/evaluation.md for the computation.

    Drawn from SHA-256("devicebio/liveness/v2\\0" || challenge) (expanded by counter); no
    prompt twice in a row, and at least one head turn (the flat-surface parallax test needs
    one) whenever ``steps`` >= 2.
    """
    data = _check_challenge(challenge)
    if type(steps) is not int or not 1 <= steps <= _MAX_STEPS:
        invalid(f"steps must be an int in 1..{_MAX_STEPS}")
    window_s = _WINDOW_MS / 1000.0
    prompts, delays = _draw(data, steps)
    return tuple(
        PromptStep(_PROMPTS[p], (_DELAY_MIN_MS + 10 * d) / 1000.0, window_s)
        for p, d in zip(prompts, delays, strict=True)
    )


#: The slowest camera a session may run on. A passed claim that examined fewer frames than
#: the plan's delays last at this rate cannot have watched the whole plan being performed.
MIN_SESSION_FPS = 10


def minimum_frames(plan: Sequence[PromptStep]) -> int:
    """The fewest frames a session that performed ``plan`` can have examined."""
    total_ms = sum(round(float(step.delay_s) * 1000.0) for step in plan)
    return -(-total_ms * MIN_SESSION_FPS // 1000)


def liveness_sequence_hash(challenge: bytes, plan: Sequence[PromptStep]) -> bytes:
    """32-byte SHA-256 over a canonical encoding of the challenge and the plan.

    Encoding: domain || u16 len(challenge) || challenge || u8 n || n x (u8 len(prompt) ||
    prompt ASCII || u32 delay_ms || u32 window_ms), big-endian; times rounded to milliseconds.
    """
    data = _check_challenge(challenge)
    if not isinstance(plan, Sequence) or not 1 <= len(plan) <= _MAX_STEPS:
        invalid(f"plan must be a sequence of 1..{_MAX_STEPS} PromptStep")
    steps: list[tuple[Prompt, int, int]] = []
    for step in plan:
        if not isinstance(step, PromptStep):
            invalid("plan must hold PromptStep")
        delay_ms, window_ms = (round(float(t) * 1000.0) for t in (step.delay_s, step.window_s))
        if not (0 <= delay_ms < 2**32 and 0 <= window_ms < 2**32):
            invalid("prompt times out of range")
        steps.append((Prompt(step.prompt), delay_ms, window_ms))
    return _sequence_hash(data, steps)


def _step_bytes(prompt: Prompt, delay_ms: int, window_ms: int) -> bytes:
    """One step of the hash encoding: u8 len(prompt) || prompt ASCII || u32 delay || u32 window."""
    return bytes((len(prompt.value),)) + prompt.value.encode("ascii") + _TIMES(delay_ms, window_ms)


def _hash_steps(data: bytes, n: int, encoded_steps: bytes) -> bytes:
    return hashlib.sha256(
        _HASH_DOMAIN + _U16(len(data)) + data + bytes((n,)) + encoded_steps
    ).digest()


def _sequence_hash(data: bytes, steps: Sequence[tuple[Prompt, int, int]]) -> bytes:
    """The sequence hash of any plan (see :func:`liveness_sequence_hash`)."""
    return _hash_steps(data, len(steps), b"".join(_step_bytes(*step) for step in steps))


# _DRAWN_STEP[prompt index][delay step]: the encoded step of a drawn plan (its window is
# always _WINDOW_MS), so the verifier's expectation joins 6 of these instead of packing them.
_DRAWN_STEP = tuple(
    tuple(_step_bytes(p, _DELAY_MIN_MS + 10 * d, _WINDOW_MS) for d in range(_DELAY_STEPS))
    for p in _PROMPTS
)


def liveness_expectation(challenge: bytes) -> tuple[bytes, int]:
    """``(liveness_sequence_hash, minimum_frames)`` of ``challenge``'s default plan.

    What a verifier checks a challenge-bound claim against, computed straight from the
    drawn indices: the same bytes as
    ``liveness_sequence_hash(challenge, liveness_plan(challenge))`` and the same count as
    ``minimum_frames(liveness_plan(challenge))`` (property tests hold them equal, and to a
    pinned reference), without building the plan's objects.
    """
    data = _check_challenge(challenge)
    prompts, delays = _draw(data, DEFAULT_STEPS)
    encoded = b"".join([_DRAWN_STEP[p][d] for p, d in zip(prompts, delays, strict=True)])
    total_ms = DEFAULT_STEPS * _DELAY_MIN_MS + 10 * sum(delays)
    return _hash_steps(data, DEFAULT_STEPS, encoded), -(-total_ms * MIN_SESSION_FPS // 1000)

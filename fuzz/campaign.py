"""A bounded mutation campaign over every parser, public verify function and vault reader.

    python fuzz/campaign.py                      # ~1.2 million inputs, both cores
    python fuzz/campaign.py --inputs 20000 --workers 1 --json out/fuzz.json

Each target starts from valid inputs built with the real parts (python-fido2 structures, an
Ed25519 credential key, a signed revocation list, a sealed vault record) and feeds mutated
copies to the function under test. Some mutations are *re-signed* with the real key, so the
checks past the signature (challenge, origin, RP id, flags, counter, extension, policy) are
reached too. For each input the outcome is one of:

- ``refused``: the target's own typed error (ProtocolError, VerifierError, DeviceBioError);
- ``accepted``: it returned, and an independent oracle agrees the input deserved it;
- ``untyped``: any other exception (a bug: callers are promised one error type);
- ``wrong``: it returned, but the oracle says it should have refused (a security bug).

The campaign is deterministic for a given ``--seed`` (challenges come from the seeded RNG
and are put in the store directly). It exits non-zero when any untyped exception or wrong
acceptance was seen, and prints inputs, untyped and wrong counts per target.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import random
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
import nacl.signing
from fido2 import cbor as fido2_cbor
from fido2.webauthn import AttestationObject, AuthenticatorData, CollectedClientData

from devicebio import protocol
from devicebio.errors import DeviceBioError
from devicebio.protocol import DevicebioExtension, LivenessClaim, Method, ProtocolError
from verifier import (
    EntryKind,
    Policy,
    Purpose,
    RevocationEntry,
    RevocationList,
    RevocationReason,
    SQLiteStore,
    VerifierError,
    parse_revocation_list,
    sign_revocation_list,
    verify_assertion,
    verify_registration,
)

RP = "fuzz.example"
ORIGIN = "https://fuzz.example"
F = AuthenticatorData.FLAG
CRED_KEY = nacl.signing.SigningKey(b"\x5a" * 32)
ISSUER_KEY = nacl.signing.SigningKey(b"\x6b" * 32)
CRED_ID = hashlib.sha256(b"devicebio fuzz credential").digest()
MODEL = "dlib-resnet-v1@fuzz"
INTERESTING = (
    0x00,
    0x01,
    0x17,
    0x18,
    0x1F,
    0x20,
    0x3F,
    0x40,
    0x7F,
    0x80,
    0x9F,
    0xBF,
    0xF4,
    0xF5,
    0xF6,
    0xF7,
    0xFA,
    0xFB,
    0xFF,
)  # CBOR major-type / special boundaries


# --------------------------------------------------------------------------- mutators


def mutate_bytes(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(8)
        pos = rng.randrange(len(out) + 1) if out else 0
        if op == 0 and out:  # flip a bit
            out[pos % len(out)] ^= 1 << rng.randrange(8)
        elif op == 1 and out:  # an interesting byte
            out[pos % len(out)] = rng.choice(INTERESTING)
        elif op == 2:  # insert random bytes
            out[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif op == 3 and out:  # delete a range
            del out[pos : pos + rng.randint(1, 16)]
        elif op == 4 and out:  # duplicate a range
            start = rng.randrange(len(out))
            out[pos:pos] = out[start : start + rng.randint(1, 32)]
        elif op == 5:  # truncate
            del out[rng.randrange(len(out) + 1) :]
        elif op == 6 and pool:  # splice from another valid input
            other = rng.choice(pool)
            if other:
                start = rng.randrange(len(other))
                out[pos:pos] = other[start : start + rng.randint(1, 64)]
        else:  # length-field arithmetic
            if out:
                out[pos % len(out)] = (out[pos % len(out)] + rng.choice((-1, 1, 24, -24))) % 256
    return bytes(out)


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(12 if depth < 2 else 9)
    if kind == 0:
        return rng.choice((0, 1, -1, 23, 24, 255, 256, 2**32, 2**63 - 1, -(2**63), 2**64))
    if kind == 1:
        return rng.randbytes(rng.choice((0, 1, 15, 16, 17, 31, 32, 33, 64, 65)))
    if kind == 2:
        return rng.choice(("", "a", "face", "pin", "none", "active-challenge", "\x00", "é" * 40))
    if kind == 3:
        return rng.choice((True, False, None))
    if kind == 4:
        return rng.choice((0.0, -0.0, 1.5, float("inf"), float("nan")))
    if kind == 5:
        return cbor2.CBORTag(rng.choice((0, 1, 24, 55799, 18)), rng.randbytes(4))
    if kind == 6:
        return "x" * rng.choice((32, 33, 64, 65, 128, 129, 257))
    if kind == 7:
        return rng.randint(-(2**70), 2**70)
    if kind == 8:
        return []
    if kind == 9:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {_random_value(rng, 2): _random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def mutate_tree(rng: random.Random, obj: Any, depth: int = 0) -> Any:
    """Structure-aware: replace, drop or add one node somewhere in a decoded CBOR/JSON tree."""
    if isinstance(obj, dict) and obj and rng.random() < 0.75:
        obj = dict(obj)
        key = rng.choice(list(obj))
        op = rng.randrange(4)
        if op == 0:
            del obj[key]
        elif op == 1:
            obj[_random_value(rng, 2)] = _random_value(rng)
        elif op == 2:
            obj[key] = mutate_tree(rng, obj[key], depth + 1)
        else:
            obj[key] = _random_value(rng)
        return obj
    if isinstance(obj, list) and obj and rng.random() < 0.75:
        obj = list(obj)
        i = rng.randrange(len(obj))
        if rng.random() < 0.3:
            del obj[i]
        else:
            obj[i] = mutate_tree(rng, obj[i], depth + 1)
        return obj
    if isinstance(obj, bytes) and obj and rng.random() < 0.5:
        return mutate_bytes(rng, obj, [])
    return _random_value(rng)


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return obj.hex()
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, cbor2.CBORTag):
        return {"tag": obj.tag}
    if isinstance(obj, dict):
        return {str(k) if not isinstance(k, str) else k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


def mutate_json_obj(rng: random.Random, obj: dict[str, Any]) -> Any:
    """A JSON response mutated as data (members) or as text (bytes)."""
    if rng.random() < 0.5:
        return _json_safe(mutate_tree(rng, obj))
    text = json.dumps(obj).encode()
    return mutate_bytes(rng, text, [])


# --------------------------------------------------------------------------- valid inputs


def extension(
    method: Method = Method.FACE, *, device_id: bytes | None = None, challenge: bytes = b"c" * 32
) -> dict[str, Any]:
    plan_hash = protocol.liveness_sequence_hash(challenge, protocol.liveness_plan(challenge))
    liveness = (
        LivenessClaim("active-challenge", True, plan_hash, 200)
        if method is Method.FACE
        else LivenessClaim.none()
    )
    return DevicebioExtension(
        method=method,
        liveness=liveness,
        model=MODEL if method is Method.FACE else None,
        assurance="strong" if method is Method.FACE else "weaker",
        device_id=device_id,
        sdk_version="0.1.0",
    ).to_extensions()


def client_data(kind: str, challenge: bytes, origin: str = ORIGIN, **extra: Any) -> bytes:
    return bytes(CollectedClientData.create(type=kind, challenge=challenge, origin=origin, **extra))


def assertion_parts(challenge: bytes, counter: int) -> tuple[bytes, bytes]:
    auth = AuthenticatorData.create(
        hashlib.sha256(RP.encode()).digest(),
        F.UP | F.UV | F.ED,
        counter,
        b"",
        extension(challenge=challenge),
    )
    return bytes(auth), client_data("webauthn.get", challenge)


def assertion_json(auth: bytes, cdj: bytes, key: nacl.signing.SigningKey = CRED_KEY) -> Any:
    sig = key.sign(auth + hashlib.sha256(cdj).digest()).signature
    return protocol.authentication_to_json(
        credential_id=CRED_ID,
        client_data_json=cdj,
        authenticator_data=auth,
        signature=sig,
        user_handle=None,
    )


def registration_parts(challenge: bytes, cred_id: bytes) -> tuple[bytes, bytes]:
    att_cred = protocol.attested_credential_data(cred_id, bytes(CRED_KEY.verify_key))
    auth = AuthenticatorData.create(
        hashlib.sha256(RP.encode()).digest(),
        F.UP | F.UV | F.AT | F.ED,
        0,
        bytes(att_cred),
        extension(device_id=b"\x11" * 16, challenge=challenge),
    )
    return bytes(auth), client_data("webauthn.create", challenge)


def registration_json(cred_id: bytes, auth: bytes, cdj: bytes) -> Any:
    """Built by hand (not through fido2 or protocol.registration_to_json, which would refuse
    a mutated authData before the verifier ever saw it)."""
    sig = CRED_KEY.sign(auth + hashlib.sha256(cdj).digest()).signature
    att = fido2_cbor.encode(
        {"fmt": "packed", "attStmt": {"alg": protocol.COSE_ALG_EDDSA, "sig": sig}, "authData": auth}
    )
    b64 = protocol.b64url_encode
    return {
        "id": b64(cred_id),
        "rawId": b64(cred_id),
        "type": "public-key",
        "response": {"clientDataJSON": b64(cdj), "attestationObject": b64(att)},
        "clientExtensionResults": {},
    }


def revocation_list(serial: int = 7) -> RevocationList:
    now = 1_800_000_000
    return RevocationList(
        issuer="fuzz-rp",
        serial=serial,
        this_update=now,
        next_update=now + 86_400,
        entries=(
            RevocationEntry(EntryKind.CREDENTIAL_ID, b"\x01" * 32, RevocationReason.REVOKED, now),
            RevocationEntry(EntryKind.MODEL_ID, "bad-model@1", RevocationReason.REVOKED, now),
        ),
    )


# --------------------------------------------------------------------------- targets


@dataclass
class Tally:
    inputs: int = 0
    refused: int = 0
    accepted: int = 0
    untyped: int = 0
    wrong: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        for name in ("inputs", "refused", "accepted", "untyped", "wrong"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.examples.extend(other.examples[: 3 - len(self.examples)])


class _Refused(Exception):
    pass


class _Untyped(Exception):
    pass


class Target:
    """One function under test: ``step`` makes one input, calls it through :meth:`call`, and
    says what happened. Only exceptions raised by the function under test count; a mutation
    the harness itself cannot assemble is skipped, not counted."""

    name = ""
    typed: tuple[type[BaseException], ...] = (ProtocolError,)
    weight = 1.0  # share of the campaign's inputs

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def step(self) -> tuple[str, Any]:
        raise NotImplementedError

    def call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except self.typed as exc:
            raise _Refused from exc
        except Exception as exc:
            raise _Untyped(traceback.format_exc(limit=4)[-800:]) from exc

    def run(self, n: int) -> Tally:
        tally = Tally()
        while tally.inputs < n:
            try:
                outcome, detail = self.step()
            except _Refused:
                tally.inputs += 1
                tally.refused += 1
                continue
            except _Untyped as exc:
                tally.inputs += 1
                tally.untyped += 1
                if len(tally.examples) < 3:
                    tally.examples.append(str(exc))
                continue
            except Exception:
                continue  # the harness could not build this mutation: not an input
            tally.inputs += 1
            if outcome == "wrong":
                tally.wrong += 1
                if len(tally.examples) < 3:
                    tally.examples.append(f"wrong acceptance: {detail}")
            else:
                tally.accepted += 1
        return tally


class BytesParser(Target):
    """A parser of bytes: accepted output must be the very bytes received (bytes-backed)."""

    parse: Callable[[bytes], Any]
    seeds: list[bytes]

    def step(self) -> tuple[str, Any]:
        data = mutate_bytes(self.rng, self.rng.choice(self.seeds), self.seeds)
        parsed = self.call(type(self).parse, data)
        if bytes(parsed) != data:
            return "wrong", "parsed object is not the received bytes"
        return self.check(parsed, data)

    def check(self, parsed: Any, data: bytes) -> tuple[str, Any]:
        return "ok", None


def _seed_auth_data() -> list[bytes]:
    a, _ = assertion_parts(b"c" * 32, 5)
    r, _ = registration_parts(b"c" * 32, CRED_ID)
    plain = bytes(AuthenticatorData.create(hashlib.sha256(RP.encode()).digest(), F.UP, 1))
    return [a, r, plain]


class AuthDataTarget(BytesParser):
    name = "parse_authenticator_data"
    parse = staticmethod(protocol.parse_authenticator_data)
    weight = 3.0

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self.seeds = _seed_auth_data()

    def check(self, parsed: Any, data: bytes) -> tuple[str, Any]:
        again = AuthenticatorData.create(
            parsed.rp_id_hash,
            parsed.flags,
            parsed.counter,
            bytes(parsed.credential_data) if parsed.credential_data is not None else b"",
            parsed.extensions,
        )
        if bytes(again) != data:
            return "wrong", "accepted non-canonical authenticatorData"
        return "ok", None


class AttestationTarget(BytesParser):
    name = "parse_attestation_object"
    parse = staticmethod(protocol.parse_attestation_object)
    weight = 2.0

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        auth, cdj = registration_parts(b"c" * 32, CRED_ID)
        reg = registration_json(CRED_ID, auth, cdj)
        self.seeds = [protocol.b64url_decode(reg["response"]["attestationObject"])]

    def check(self, parsed: Any, data: bytes) -> tuple[str, Any]:
        if parsed.auth_data.credential_data is None:
            return "wrong", "attestation without attested credential data"
        return "ok", None


class ClientDataTarget(BytesParser):
    name = "parse_client_data"
    parse = staticmethod(protocol.parse_client_data)
    weight = 2.0

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self.seeds = [
            client_data("webauthn.get", b"c" * 32),
            client_data("webauthn.create", b"d" * 32, crossOrigin=True, topOrigin=ORIGIN),
        ]

    def check(self, parsed: Any, data: bytes) -> tuple[str, Any]:
        obj = json.loads(data)
        if not all(isinstance(obj.get(k), str) for k in ("type", "challenge", "origin")):
            return "wrong", "clientDataJSON without type/challenge/origin strings"
        return "ok", None


class CoseKeyTarget(BytesParser):
    name = "ed25519_public_key_from_cose"
    weight = 1.0

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self.seeds = [cbor2.dumps(dict(protocol.ed25519_cose_key(bytes(CRED_KEY.verify_key))))]

    def step(self) -> tuple[str, Any]:
        data = mutate_bytes(self.rng, self.rng.choice(self.seeds), self.seeds)
        key = self.call(protocol.ed25519_public_key_from_cose, data)
        if len(key) != 32 or data != cbor2.dumps(cbor2.loads(data), canonical=True):
            return "wrong", "accepted a COSE key that is not canonical Ed25519"
        return "ok", None


class ExtensionTarget(Target):
    """Mutated extension maps inside canonical authenticatorData, so only the extension's own
    rules decide; an accepted extension must round-trip to exactly what was received."""

    name = "devicebio_extension_of"
    weight = 2.0

    def step(self) -> tuple[str, Any]:
        ext = extension(self.rng.choice(list(Method)))["devicebio"]
        mutated = mutate_tree(self.rng, ext)
        auth = AuthenticatorData.create(  # may fail to encode: then the harness skips it
            hashlib.sha256(RP.encode()).digest(), F.UP | F.ED, 1, b"", {"devicebio": mutated}
        )
        parsed = self.call(
            lambda: protocol.devicebio_extension_of(protocol.parse_authenticator_data(bytes(auth)))
        )
        if (
            parsed is None
            or parsed.to_cbor_obj() != AuthenticatorData(auth).extensions["devicebio"]
        ):
            return "wrong", f"extension accepted but does not round-trip: {mutated!r:.200}"
        return "ok", None


class JsonTarget(Target):
    weight = 2.0
    seeds: list[dict[str, Any]]
    parse: Callable[[Any], Any]

    def step(self) -> tuple[str, Any]:
        value = mutate_json_obj(self.rng, self.rng.choice(self.seeds))
        parsed = self.call(type(self).parse, value)
        obj = json.loads(value) if isinstance(value, bytes) else value
        if protocol.b64url_encode(parsed.credential_id) != obj["rawId"]:
            return "wrong", "rawId does not re-encode to what was received"
        return "ok", None


class RegistrationJsonTarget(JsonTarget):
    name = "parse_registration_json"
    parse = staticmethod(protocol.parse_registration_json)

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        auth, cdj = registration_parts(b"c" * 32, CRED_ID)
        self.seeds = [registration_json(CRED_ID, auth, cdj)]


class AuthenticationJsonTarget(JsonTarget):
    name = "parse_authentication_json"
    parse = staticmethod(protocol.parse_authentication_json)

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self.seeds = [assertion_json(*assertion_parts(b"c" * 32, 3))]


class RevocationTarget(Target):
    """Raw mutations (the signature must catch them) and re-signed payload mutations (the
    payload's own rules must): an accepted list must re-sign to exactly the bytes received."""

    name = "parse_revocation_list"
    typed = (VerifierError,)
    weight = 1.5

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self.seed = sign_revocation_list(revocation_list(), ISSUER_KEY)
        self.verify_key = ISSUER_KEY.verify_key

    def step(self) -> tuple[str, Any]:
        if self.rng.random() < 0.5:
            data = mutate_bytes(self.rng, self.seed, [self.seed])
            resigned = False
        else:
            tag = cbor2.loads(self.seed)
            protected, unprotected, payload, _ = tag.value
            new_payload = (
                mutate_bytes(self.rng, payload, [payload])
                if self.rng.random() < 0.3
                else cbor2.dumps(mutate_tree(self.rng, cbor2.loads(payload)), canonical=True)
            )
            sig_structure = cbor2.dumps(["Signature1", protected, b"", new_payload])
            sig = ISSUER_KEY.sign(sig_structure).signature
            data = cbor2.dumps(cbor2.CBORTag(18, [protected, unprotected, new_payload, sig]))
            resigned = True
        parsed = self.call(parse_revocation_list, data, self.verify_key)
        if not resigned and data != self.seed:
            return "wrong", "a mutated list verified without a new signature"
        if sign_revocation_list(parsed, ISSUER_KEY) != data:
            return "wrong", "accepted list does not re-encode to the received bytes"
        return "ok", None


class AssertionTarget(Target):
    """verify_assertion on a real store: each input gets its own challenge; half the mutated
    assertions are re-signed with the credential key. The oracle re-checks every rule a
    relying party relies on; an acceptance that breaks one is a wrong acceptance."""

    name = "verify_assertion"
    typed = (VerifierError,)
    weight = 0.4

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self.store = SQLiteStore(":memory:", durability="normal")
        ch = rng.randbytes(32)
        self.store.insert_challenge(ch, "alice", Purpose.REGISTER.value, 4e9)
        auth, cdj = registration_parts(ch, CRED_ID)
        verify_registration(
            credential=registration_json(CRED_ID, auth, cdj),
            expected_challenge=ch,
            expected_origin=ORIGIN,
            expected_rp_id=RP,
            store=self.store,
            user="alice",
        )
        self.counter = 0
        self.policy = Policy(require_liveness=True)

    def step(self) -> tuple[str, Any]:
        ch = self.rng.randbytes(32)
        self.store.insert_challenge(ch, "alice", Purpose.AUTHENTICATE.value, 4e9)
        auth, cdj = assertion_parts(ch, self.counter + 1)
        op = self.rng.randrange(20)
        if op == 19:  # a control: unmutated, must be accepted (proves the harness reaches it)
            credential = assertion_json(auth, cdj)
        elif op % 2 == 0:  # raw mutation of the JSON (the signature must catch it)
            credential = mutate_json_obj(self.rng, assertion_json(auth, cdj))
        else:  # structure-aware mutation of the signed parts, re-signed
            if op % 4 == 1:
                auth = mutate_bytes(self.rng, auth, [auth])
            else:
                cd = json.loads(cdj)
                cdj = json.dumps(_json_safe(mutate_tree(self.rng, cd))).encode()
            credential = assertion_json(auth, cdj)
        result = self.call(
            verify_assertion,
            credential=credential,
            expected_challenge=ch,
            expected_origin=ORIGIN,
            expected_rp_id=RP,
            store=self.store,
            policy=self.policy,
        )
        problem = self.oracle(credential, ch)
        self.counter = max(self.counter, result.new_sign_count)
        return ("wrong", problem) if problem else ("ok", None)

    def oracle(self, credential: Any, ch: bytes) -> str | None:
        obj = json.loads(credential) if isinstance(credential, bytes) else credential
        resp = obj["response"]
        auth = AuthenticatorData(protocol.b64url_decode(resp["authenticatorData"]))
        cdj = protocol.b64url_decode(resp["clientDataJSON"])
        cd = json.loads(cdj)
        sig = protocol.b64url_decode(resp["signature"])
        try:
            CRED_KEY.verify_key.verify(bytes(auth) + hashlib.sha256(cdj).digest(), sig)
        except Exception:
            return "signature does not verify"
        if cd.get("type") != "webauthn.get":
            return f"type {cd.get('type')!r}"
        if cd.get("challenge") != protocol.b64url_encode(ch):
            return "challenge differs"
        if cd.get("origin") != ORIGIN or cd.get("crossOrigin", False) is not False:
            return "origin differs"
        if auth.rp_id_hash != hashlib.sha256(RP.encode()).digest():
            return "rpIdHash differs"
        if not auth.flags & F.UP or not auth.flags & F.UV or auth.flags & (F.BE | F.BS):
            return f"flags {auth.flags:#x}"
        if auth.counter <= self.counter:
            return "counter did not advance"
        ext = (auth.extensions or {}).get("devicebio")
        if not isinstance(ext, dict) or ext.get("m") != "face" or not ext["l"].get("p"):
            return "accepted without a passed face liveness claim under require_liveness"
        return None


class RegistrationTarget(Target):
    name = "verify_registration"
    typed = (VerifierError,)
    weight = 0.3

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self.store = SQLiteStore(":memory:", durability="normal")
        self.n = 0

    def step(self) -> tuple[str, Any]:
        self.n += 1
        user = f"user{self.n}"
        ch = self.rng.randbytes(32)
        cred_id = self.rng.randbytes(32)
        self.store.insert_challenge(ch, user, Purpose.REGISTER.value, 4e9)
        auth, cdj = registration_parts(ch, cred_id)
        op = self.rng.randrange(3)
        if op == 0:
            credential = mutate_json_obj(self.rng, registration_json(cred_id, auth, cdj))
        elif op == 1:
            credential = registration_json(cred_id, mutate_bytes(self.rng, auth, [auth]), cdj)
        else:
            cd = json.dumps(_json_safe(mutate_tree(self.rng, json.loads(cdj)))).encode()
            credential = registration_json(cred_id, auth, cd)
        self.call(
            verify_registration,
            credential=credential,
            expected_challenge=ch,
            expected_origin=ORIGIN,
            expected_rp_id=RP,
            store=self.store,
            user=user,
        )
        obj = json.loads(credential) if isinstance(credential, bytes) else credential
        att = AttestationObject(protocol.b64url_decode(obj["response"]["attestationObject"]))
        cd = json.loads(protocol.b64url_decode(obj["response"]["clientDataJSON"]))
        if cd.get("type") != "webauthn.create" or cd.get("challenge") != protocol.b64url_encode(ch):
            return "wrong", "registration accepted for another type or challenge"
        if cd.get("origin") != ORIGIN or att.fmt != "packed":
            return "wrong", "registration accepted for another origin or format"
        if att.auth_data.rp_id_hash != hashlib.sha256(RP.encode()).digest():
            return "wrong", "registration accepted for another RP"
        return "ok", None


class VaultTarget(Target):
    """Vault.get over a sealed record whose file was mutated: any change must be refused."""

    name = "Vault.get"
    typed = (DeviceBioError,)
    weight = 0.15

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        from devicebio import RawKey, Vault

        self.tmp = tempfile.TemporaryDirectory(prefix="devicebio-fuzz-")
        self.vault = Vault.create(Path(self.tmp.name) / "vault", RawKey(b"\x21" * 32))
        self.value = {"v": 1, "data": b"\x42" * 40, "n": 7}
        self.vault.put("fuzz", "rec", self.value)
        (self.file,) = [p for p in self.vault.path.rglob("*") if p.parent.name == "fuzz"]
        self.original = self.file.read_bytes()

    def step(self) -> tuple[str, Any]:
        data = mutate_bytes(self.rng, self.original, [self.original])
        self.file.write_bytes(data)
        try:
            got = self.call(self.vault.get, "fuzz", "rec")
        finally:
            self.file.write_bytes(self.original)
        if data != self.original or got != self.value:
            return "wrong", "a mutated sealed record was read back"
        return "ok", None


TARGETS: list[type[Target]] = [
    AuthDataTarget,
    AttestationTarget,
    ClientDataTarget,
    CoseKeyTarget,
    ExtensionTarget,
    RegistrationJsonTarget,
    AuthenticationJsonTarget,
    RevocationTarget,
    AssertionTarget,
    RegistrationTarget,
    VaultTarget,
]


# --------------------------------------------------------------------------- driver


def _shard(job: tuple[str, int, int]) -> tuple[str, dict[str, Any], float]:
    name, n, seed = job
    cls = next(t for t in TARGETS if t.name == name)
    start = time.perf_counter()
    tally = cls(random.Random(f"{name}/{seed}")).run(n)
    return name, tally.__dict__, time.perf_counter() - start


def plan(total: int, seed: int, shards: int) -> list[tuple[str, int, int]]:
    weights = sum(t.weight for t in TARGETS)
    jobs = []
    for t in TARGETS:
        n = max(1, round(total * t.weight / weights))
        per = -(-n // shards)
        for k in range(shards):
            jobs.append((t.name, min(per, n - k * per), seed * 1000 + k))
    return [j for j in jobs if j[1] > 0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=1_200_000, help="total inputs")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", metavar="FILE", help="write the per-target tallies here")
    args = parser.parse_args(argv)
    jobs = plan(args.inputs, args.seed, shards=max(4, args.workers * 4))
    totals = {t.name: Tally() for t in TARGETS}
    seconds = dict.fromkeys(totals, 0.0)
    start = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(args.workers) as pool:
        for name, tally, took in pool.imap_unordered(_shard, jobs):
            totals[name].add(Tally(**tally))
            seconds[name] += took
    wall = time.perf_counter() - start
    print(
        f"{'target':<30} {'inputs':>9} {'refused':>9} {'accepted':>9} {'untyped':>8} {'wrong':>6}"
    )
    for name, t in totals.items():
        print(
            f"{name:<30} {t.inputs:>9} {t.refused:>9} {t.accepted:>9} {t.untyped:>8} {t.wrong:>6}"
        )
    all_ = Tally()
    for t in totals.values():
        all_.add(t)
    print(
        f"{'total':<30} {all_.inputs:>9} {all_.refused:>9} {all_.accepted:>9} "
        f"{all_.untyped:>8} {all_.wrong:>6}"
    )
    print(f"wall {wall:.0f} s with {args.workers} workers, seed {args.seed}")
    for name, t in totals.items():
        for example in t.examples:
            print(f"--- {name}\n{example}", file=sys.stderr)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(
            json.dumps(
                {
                    "seed": args.seed,
                    "workers": args.workers,
                    "wall_s": round(wall, 1),
                    "targets": {
                        n: {k: v for k, v in t.__dict__.items() if k != "examples"}
                        for n, t in totals.items()
                    },
                },
                indent=2,
            )
        )
    return 1 if all_.untyped or all_.wrong else 0


if __name__ == "__main__":
    sys.exit(main())

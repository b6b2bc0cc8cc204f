"""Make the known-answer vectors in this folder. Run once per format version, then commit.

    cd <repo> && PYTHONPATH=. python tests/vectors/_generate.py [--force] [only ...]

Deterministic vectors (extension CBOR, revocation lists: fixed Ed25519 seed, fixed times)
come out identical on every run. The vault vector does NOT: XChaCha20-Poly1305 nonces, the
vault id, the device secret and the credential key are random, so it is produced once and
kept; regenerating it replaces a vector that older code proved it could open. Existing files
are therefore never overwritten without ``--force``.

Nothing here is imported by the tests; tests/test_vectors.py checks the stored files.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import cbor2
import nacl
import nacl.signing
from fido2 import cbor

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

RP_ID = "example.com"
ORIGIN = "https://example.com"
# 2026-11-22T00:00:00Z: every time in the deterministic vectors is relative to this.
T0 = 1795305600


def _seed(label: str) -> bytes:
    """A fixed, published 32-byte value: sha256 of a label. Not a secret anywhere."""
    return hashlib.sha256(label.encode()).digest()


def provenance(generator: str, deterministic: bool) -> dict[str, Any]:
    import devicebio

    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "-C", str(REPO), "status", "--porcelain"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", True
    from importlib.metadata import version

    return {
        "generated_by": generator,
        "generated_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "devicebio_version": devicebio.__version__,
        "git_commit": commit,
        "git_worktree_dirty": dirty,
        "python": sys.version.split()[0],
        "libraries": {
            "fido2": version("fido2"),
            "cbor2": version("cbor2"),
            "pynacl": nacl.__version__,
        },
        "deterministic": deterministic,
    }


def jsonable(obj: Any) -> Any:
    """CBOR data model -> JSON: bytes become {"bytes_hex": ...}; everything else maps 1:1."""
    if isinstance(obj, bytes):
        return {"bytes_hex": obj.hex()}
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise TypeError("only text-keyed maps are stored as JSON")
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    return obj


# --------------------------------------------------------------------------- extension


def extension_vectors() -> dict[str, Any]:
    from fido2.webauthn import AuthenticatorData

    from devicebio.protocol import DevicebioExtension, LivenessClaim, Method

    seq = hashlib.sha256(b"devicebio/test-vector/prompt-sequence/v1").digest()
    device_id = bytes.fromhex("00112233445566778899aabbccddeeff")
    cases = {
        "face-liveness-assertion": DevicebioExtension(
            method=Method.FACE,
            liveness=LivenessClaim("active-challenge", True, seq, 42),
            model="dlib_resnet_v1@8eba2436042a9c28",
            assurance="strong",
            sdk_version="0.1.0",
        ),
        "face-no-liveness-registration": DevicebioExtension(
            method=Method.FACE,
            liveness=LivenessClaim.none(),
            model="dlib_resnet_v1@8eba2436042a9c28",
            assurance="moderate",
            device_id=device_id,
            sdk_version="0.1.0",
        ),
        "pin-assertion": DevicebioExtension(
            method=Method.PIN,
            liveness=LivenessClaim.none(),
            assurance="weaker",
            sdk_version="0.1.0",
        ),
        "recovery-minimal": DevicebioExtension(
            method=Method.RECOVERY, liveness=LivenessClaim.none(), assurance="recovery"
        ),
        "security-key-assertion": DevicebioExtension(
            method=Method.SECURITY_KEY,
            liveness=LivenessClaim.none(),
            assurance="strong",
            sdk_version="0.1.0",
        ),
    }
    rp_hash = hashlib.sha256(RP_ID.encode()).digest()
    flags = AuthenticatorData.FLAG.UP | AuthenticatorData.FLAG.UV | AuthenticatorData.FLAG.ED
    positive = []
    for name, ext in cases.items():
        obj = ext.to_cbor_obj()
        auth = AuthenticatorData.create(rp_hash, flags, 1, extensions=ext.to_extensions())
        fields = {
            "version": ext.version,
            "method": ext.method.value,
            "liveness": {
                "kind": ext.liveness.kind,
                "passed": ext.liveness.passed,
                "frames": ext.liveness.frames,
                "sequence_hash_hex": (
                    ext.liveness.sequence_hash.hex() if ext.liveness.sequence_hash else None
                ),
            },
            "model": ext.model,
            "assurance": ext.assurance,
            "device_id_hex": ext.device_id.hex() if ext.device_id else None,
            "sdk_version": ext.sdk_version,
        }
        positive.append(
            {
                "name": name,
                "fields": fields,
                "extension_cbor_hex": cbor.encode(obj).hex(),
                "authenticator_data_hex": bytes(auth).hex(),
            }
        )

    base = cases["face-liveness-assertion"].to_cbor_obj()

    def auth_with(ext_obj: Any, *, encoder: str = "fido2") -> str:
        ext_map = {"devicebio": ext_obj}
        # cbor2 can write what fido2 cannot (floats, non-canonical order).
        ext_bytes = cbor.encode(ext_map) if encoder == "fido2" else cbor2.dumps(ext_map)
        return (rp_hash + bytes([int(flags)]) + (1).to_bytes(4, "big") + ext_bytes).hex()

    def liveness(**kw: Any) -> dict[str, Any]:
        return {**base["l"], **kw}

    negatives = [
        ("score-field", "a raw match score is not part of the schema", {**base, "sc": 0}),
        (
            "float-score-field",
            "a float anywhere is refused (fido2's CTAP2 CBOR has no floats)",
            {**base, "score": 0.42},
        ),
        ("template-field", "a template has no place either", {**base, "t": b"\x00" * 512}),
        ("version-2", "only version 1 exists", {**base, "v": 2}),
        ("version-bool", "true is not the integer 1", {**base, "v": True}),
        ("unknown-method", "method outside the enumeration", {**base, "m": "iris"}),
        (
            "liveness-none-passed",
            'kind "none" can never have passed',
            {**base, "l": liveness(k="none", p=True)},
        ),
        (
            "pin-with-liveness",
            "only the face method carries a liveness check",
            {**base, "m": "pin"},
        ),
        ("missing-assurance", "a is required", {k: v for k, v in base.items() if k != "a"}),
        ("bad-assurance-token", "assurance is [a-z0-9-]", {**base, "a": "Strong"}),
        ("device-id-15-bytes", "device id is exactly 16 bytes", {**base, "d": b"\x01" * 15}),
        ("sequence-hash-8-bytes", "h is 16..64 bytes", {**base, "l": liveness(h=b"\x02" * 8)}),
        ("frames-too-many", "f <= 100000", {**base, "l": liveness(f=100_001)}),
        ("liveness-not-map", "l is a map", {**base, "l": "active-challenge"}),
        ("model-empty", "md is 1..128 printable characters", {**base, "md": ""}),
    ]
    negative = []
    for name, why, obj in negatives:
        encoder = "cbor2" if name == "float-score-field" else "fido2"
        negative.append(
            {
                "name": name,
                "why": why,
                "authenticator_data_hex": auth_with(obj, encoder=encoder),
                "expect_reason": "malformed_data",
            }
        )
    # Map keys out of CTAP2 canonical order: same content, different bytes -> refused.
    reordered = dict(sorted(base.items(), key=lambda kv: kv[0], reverse=True))
    negative.append(
        {
            "name": "non-canonical-key-order",
            "why": "CTAP2 canonical CBOR only: keys sorted by encoded length, then bytewise",
            "authenticator_data_hex": auth_with(reordered, encoder="cbor2"),
            "expect_reason": "malformed_data",
        }
    )
    return {
        "description": (
            "devicebio authenticator extension, format version 1: canonical CBOR of the "
            "extension value, and the authenticatorData (rpIdHash of example.com, flags "
            "UP|UV|ED, counter 1) that carries it. Negative cases are authenticatorData whose "
            "devicebio extension must be refused with the given devicebio Reason."
        ),
        "format_version": 1,
        "provenance": provenance("tests/vectors/_generate.py extension_vectors()", True),
        "rp_id": RP_ID,
        "flags": int(flags),
        "counter": 1,
        "positive": positive,
        "negative": negative,
    }


# --------------------------------------------------------------------------- revocation


def revocation_vectors() -> dict[str, Any]:
    from verifier.revocation import (
        EntryKind,
        RevocationEntry,
        RevocationList,
        RevocationReason,
        revocation_list_to_json,
        sign_revocation_list,
    )
    from verifier.revocation.codec import _payload_obj, _sig_structure

    seed = _seed("devicebio/test-vector/revocation-issuer/v1")
    other_seed = _seed("devicebio/test-vector/revocation-impostor/v1")
    key = nacl.signing.SigningKey(seed)
    kid = b"example-issuer-2026"
    # The credential id of tests/vectors/webauthn-v1.json, so the two vectors meet.
    from devicebio.protocol import b64url_decode

    cred_id = b64url_decode("t6XRsneU_yiAowim0F3jzv-KdQWnv1R8ml-dcPLSd7s")
    entries = (
        RevocationEntry(
            EntryKind.CREDENTIAL_ID, cred_id, RevocationReason.USER_REQUESTED, T0 - 3600
        ),
        RevocationEntry(
            EntryKind.DEVICE_KEY,
            bytes.fromhex("00112233445566778899aabbccddeeff"),
            RevocationReason.ATTESTATION_KEY_COMPROMISE,
            T0 - 7200,
        ),
        RevocationEntry(
            EntryKind.MODEL_ID,
            "dlib-resnet-v1@sha256:0123456789ab",
            RevocationReason.USER_VERIFICATION_BYPASS,
            T0 - 86400,
        ),
        RevocationEntry(
            EntryKind.SDK_VERSION, "0.0.9", RevocationReason.USER_KEY_REMOTE_COMPROMISE, T0 - 86400
        ),
    )
    week = 7 * 86400
    current = RevocationList("devicebio example issuer", 7, T0, T0 + week, entries)
    older = RevocationList("devicebio example issuer", 6, T0 - week, T0 + 3600, entries[:2])
    same_serial = RevocationList("devicebio example issuer", 7, T0, T0 + week, entries[:3])
    newer = RevocationList("devicebio example issuer", 8, T0 + 3600, T0 + 2 * week, ())

    def signed(rl: RevocationList, k: nacl.signing.SigningKey = key) -> bytes:
        return sign_revocation_list(rl, k, kid=kid)

    data = signed(current)
    payload = cbor2.dumps(_payload_obj(current), canonical=True)
    protected = b"\xa1\x01\x27"

    def sign_raw(payload_bytes: bytes, prot: bytes = protected) -> bytes:
        sig = key.sign(_sig_structure(prot, payload_bytes)).signature
        return cbor2.dumps(cbor2.CBORTag(18, [prot, {4: kid}, payload_bytes, sig]), canonical=True)

    def flip(blob: bytes, index: int) -> bytes:
        out = bytearray(blob)
        out[index] ^= 0x01
        return bytes(out)

    bad_reason = _payload_obj(current)
    bad_reason[6][0][3] = "lost"
    bad_times = _payload_obj(current)
    bad_times[5] = bad_times[4]
    extra_key = _payload_obj(current)
    extra_key[7] = "extra"
    non_canonical_payload = cbor2.dumps(_payload_obj(current), canonical=False)
    # Python dicts keep insertion order; 6 before 1 is not the canonical order.
    shuffled = {6: _payload_obj(current)[6], **{k: v for k, v in _payload_obj(current).items()}}
    non_canonical_payload = cbor2.dumps(shuffled)
    assert non_canonical_payload != payload
    negatives = [
        (
            "signature-bit-flip",
            "last signature byte changed",
            flip(data, len(data) - 1),
            "revocation_list_bad_signature",
        ),
        (
            "payload-bit-flip",
            "one payload byte changed (the signature is checked first)",
            flip(data, data.index(payload) + 20),
            "revocation_list_bad_signature",
        ),
        (
            "other-issuer",
            "signed by another key",
            signed(current, nacl.signing.SigningKey(other_seed)),
            "revocation_list_bad_signature",
        ),
        (
            "alg-es256",
            "protected header {1: -7}: only EdDSA is accepted",
            sign_raw(payload, b"\xa1\x01\x26"),
            "malformed",
        ),
        (
            "untagged",
            "COSE_Sign1 without tag 18",
            cbor2.dumps(cbor2.loads(data).value, canonical=True),
            "malformed",
        ),
        (
            "non-canonical-payload",
            "validly signed, but the payload map is not canonical",
            sign_raw(non_canonical_payload),
            "malformed",
        ),
        (
            "unknown-reason",
            "validly signed, reason 'lost' is not a reason code",
            sign_raw(cbor2.dumps(bad_reason, canonical=True)),
            "malformed",
        ),
        (
            "next-update-not-after-this-update",
            "validly signed, next_update == this_update",
            sign_raw(cbor2.dumps(bad_times, canonical=True)),
            "malformed",
        ),
        (
            "unknown-payload-key",
            "validly signed, payload key 7 is not defined",
            sign_raw(cbor2.dumps(extra_key, canonical=True)),
            "malformed",
        ),
        ("truncated", "last byte missing", data[:-1], "malformed"),
    ]
    return {
        "description": (
            "Signed revocation lists, format version 1 (COSE_Sign1, EdDSA/Ed25519, canonical "
            "CBOR payload). The issuer's Ed25519 seed is published here on purpose: Ed25519 is "
            "deterministic, so signing 'list' with it must give 'cose_sign1_hex' byte for byte."
        ),
        "format_version": 1,
        "provenance": provenance("tests/vectors/_generate.py revocation_vectors()", True),
        "issuer_seed_hex": seed.hex(),
        "issuer_seed_derivation": "sha256('devicebio/test-vector/revocation-issuer/v1')",
        "issuer_public_key_hex": bytes(key.verify_key).hex(),
        "kid_hex": kid.hex(),
        "list": {
            "cose_sign1_hex": data.hex(),
            "payload_hex": payload.hex(),
            "sig_structure_hex": _sig_structure(protected, payload).hex(),
            "signature_hex": cbor2.loads(data).value[3].hex(),
            "decoded": revocation_list_to_json(current),
        },
        "older_list": {
            "cose_sign1_hex": signed(older).hex(),
            "decoded": revocation_list_to_json(older),
        },
        "same_serial_other_content": {
            "cose_sign1_hex": signed(same_serial).hex(),
            "decoded": revocation_list_to_json(same_serial),
        },
        "newer_list": {
            "cose_sign1_hex": signed(newer).hex(),
            "decoded": revocation_list_to_json(newer),
        },
        "install_sequence": [
            {"install": "list", "now": T0 + 60, "expect": "ok"},
            {"install": "older_list", "now": T0 + 120, "expect": "revocation_list_rollback"},
            {
                "install": "same_serial_other_content",
                "now": T0 + 120,
                "expect": "revocation_list_rollback",
            },
            {"install": "list", "now": T0 + 180, "expect": "ok"},
            {"install": "newer_list", "now": T0 + week + 10, "expect": "ok"},
            {"install": "list", "now": T0 + week + 20, "expect": "revocation_list_stale"},
        ],
        "checks_against_list": [
            {"credential_id_hex": cred_id.hex(), "now": T0 + 60, "expect": "revoked"},
            {"credential_id_hex": "00" * 32, "now": T0 + 60, "expect": "ok"},
            {
                "credential_id_hex": "00" * 32,
                "device_id_hex": "00112233445566778899aabbccddeeff",
                "now": T0 + 60,
                "expect": "revoked",
            },
            {
                "credential_id_hex": "00" * 32,
                "model_id": "dlib-resnet-v1@sha256:0123456789ab",
                "now": T0 + 60,
                "expect": "revoked",
            },
            {
                "credential_id_hex": "00" * 32,
                "model_id": "dlib_resnet_v1@8eba2436042a9c28",
                "sdk_version": "0.1.0",
                "now": T0 + 60,
                "expect": "ok",
            },
            {
                "credential_id_hex": "00" * 32,
                "sdk_version": "0.0.9",
                "now": T0 + 60,
                "expect": "revoked",
            },
            {"credential_id_hex": "00" * 32, "now": T0 + week, "expect": "ok"},
            {
                "credential_id_hex": "00" * 32,
                "now": T0 + week + 1,
                "expect": "revocation_list_stale",
            },
        ],
        "negative": [
            {"name": n, "why": w, "cose_sign1_hex": b.hex(), "expect_reason": r}
            for n, w, b, r in negatives
        ],
    }


# --------------------------------------------------------------------------- webauthn KAT


def webauthn_kat_vectors() -> dict[str, Any]:
    """Registration and assertions from a PUBLISHED credential seed, so every byte is fixed.

    Built with the same primitives devicebio.hazmat.credentials uses
    (protocol.attested_credential_data,
    DevicebioExtension, fido2's AuthenticatorData / CollectedClientData / AttestationObject,
    an Ed25519 signature over authData || SHA-256(clientDataJSON)); credentials.py itself draws
    a random key, which is why tests/vectors/webauthn-v1.json exists beside this.
    """
    from fido2.webauthn import AttestationObject, AuthenticatorData, CollectedClientData

    from devicebio import protocol
    from devicebio.protocol import DevicebioExtension, LivenessClaim, Method

    flag = AuthenticatorData.FLAG
    seed = _seed("devicebio/test-vector/credential-key/v1")
    key = nacl.signing.SigningKey(seed)
    cred_id = _seed("devicebio/test-vector/credential-id/v1")
    device_id = bytes.fromhex("00112233445566778899aabbccddeeff")
    user_handle = b"alice-handle-0001"
    rp_hash = hashlib.sha256(RP_ID.encode()).digest()
    model = "dlib_resnet_v1@8eba2436042a9c28"

    def challenge(label: str) -> bytes:
        return hashlib.sha256(f"devicebio/test-vector/challenge/{label}".encode()).digest()

    def bound(label: str) -> LivenessClaim:
        # v2: a passed claim carries the hash of ITS challenge's plan and at least the frames
        # that plan needs, as the verifier checks whatever its policy (v1's claims did not).
        ch = challenge(label)
        plan = protocol.liveness_plan(ch)
        frames = protocol.minimum_frames(plan) + 60
        return LivenessClaim(
            "active-challenge", True, protocol.liveness_sequence_hash(ch, plan), frames
        )

    def face_live_for(label: str, device_id: bytes | None = None) -> DevicebioExtension:
        return DevicebioExtension(
            method=Method.FACE,
            liveness=bound(label),
            model=model,
            assurance="strong",
            device_id=device_id,
            sdk_version="0.1.0",
        )

    face_live = face_live_for("assertion-face-liveness")
    face_flat = DevicebioExtension(
        method=Method.FACE,
        liveness=LivenessClaim.none(),
        model=model,
        assurance="moderate",
        sdk_version="0.1.0",
    )
    pin = DevicebioExtension(
        method=Method.PIN, liveness=LivenessClaim.none(), assurance="weaker", sdk_version="0.1.0"
    )

    # ---- registration
    reg_ext = face_live_for("registration", device_id)

    def registration(
        *,
        ext: Any = "face",
        fmt: str = "packed",
        stmt: dict[str, Any] | None = None,
        flags: Any = flag.UP | flag.UV | flag.AT | flag.ED,
        label: str = "registration",
        tamper_sig: bool = False,
    ) -> tuple[bytes, dict[str, Any], dict[str, Any]]:
        if ext == "face":
            ext = face_live_for(label, device_id).to_extensions()
        att_cred = protocol.attested_credential_data(cred_id, bytes(key.verify_key))
        auth = AuthenticatorData.create(rp_hash, flags, 0, att_cred, ext)
        client = CollectedClientData.create(
            type="webauthn.create", challenge=challenge(label), origin=ORIGIN
        )
        sig = key.sign(bytes(auth) + client.hash).signature
        if tamper_sig:
            sig = sig[:-1] + bytes([sig[-1] ^ 1])
        att = AttestationObject.create(
            fmt, auth, stmt if stmt is not None else {"alg": -8, "sig": sig}
        )
        layout = {
            "rp_id_hash_hex": rp_hash.hex(),
            "flags": int(flags),
            "sign_count": 0,
            "aaguid_hex": bytes(att_cred.aaguid).hex(),
            "credential_id_length": len(cred_id),
            "credential_id_hex": cred_id.hex(),
            "credential_public_key_cose_hex": cbor.encode(att_cred.public_key).hex(),
            "extensions_cbor_hex": cbor.encode(ext).hex() if ext else None,
        }
        return (
            challenge(label),
            protocol.registration_to_json(
                credential_id=cred_id,
                client_data_json=bytes(client),
                attestation_object=bytes(att),
            ),
            {
                "authenticator_data_hex": bytes(auth).hex(),
                "client_data_json": bytes(client).decode(),
                "client_data_hash_hex": client.hash.hex(),
                "signed_message_hex": (bytes(auth) + client.hash).hex(),
                "signature_hex": sig.hex(),
                "attestation_object_hex": bytes(att).hex(),
                "layout": layout,
            },
        )

    # ---- assertions
    def assertion(
        label: str,
        *,
        counter: int,
        ext: Any = "face",
        flags: Any = flag.UP | flag.UV | flag.ED,
        typ: str = "webauthn.get",
        origin: str = ORIGIN,
        cross_origin: bool = False,
        client_challenge: bytes | None = None,
        rp: bytes = rp_hash,
        credential_id: bytes = cred_id,
        tamper_sig: bool = False,
        attested: bool = False,
    ) -> tuple[bytes, dict[str, Any], dict[str, Any]]:
        if ext == "face":
            ext = face_live_for(label).to_extensions()
        pub = bytes(key.verify_key)
        att_cred = protocol.attested_credential_data(cred_id, pub) if attested else b""
        auth = AuthenticatorData.create(rp, flags, counter, att_cred, ext)
        client = CollectedClientData.create(
            type=typ,
            challenge=client_challenge or challenge(label),
            origin=origin,
            cross_origin=cross_origin,
        )
        sig = key.sign(bytes(auth) + client.hash).signature
        if tamper_sig:
            sig = sig[:-1] + bytes([sig[-1] ^ 1])
        return (
            challenge(label),
            protocol.authentication_to_json(
                credential_id=credential_id,
                client_data_json=bytes(client),
                authenticator_data=bytes(auth),
                signature=sig,
                user_handle=user_handle,
            ),
            {
                "authenticator_data_hex": bytes(auth).hex(),
                "client_data_json": bytes(client).decode(),
                "client_data_hash_hex": client.hash.hex(),
                "signed_message_hex": (bytes(auth) + client.hash).hex(),
                "signature_hex": sig.hex(),
            },
        )

    reg_challenge, reg_json, reg_bytes = registration()
    positives = []
    for label, counter, ext, expect in (
        ("assertion-face-liveness", 1, face_live, ("face", "moderate", True)),
        ("assertion-face-no-liveness", 2, face_flat, ("face", "moderate", False)),
        ("assertion-pin", 3, pin, ("pin", "weaker", False)),
    ):
        ch, js, raw = assertion(label, counter=counter, ext=ext.to_extensions())
        positives.append(
            {
                "name": label,
                "challenge_hex": ch.hex(),
                "credential": js,
                "bytes": raw,
                "fields": {
                    "sign_count": counter,
                    "extension_cbor_hex": cbor.encode(ext.to_cbor_obj()).hex(),
                },
                "expect": {
                    "new_sign_count": counter,
                    "method": expect[0],
                    "assurance": expect[1],
                    "liveness_passed": expect[2],
                    "user_verified": True,
                },
            }
        )

    bad_ext = dict(face_live.to_cbor_obj(), sc=87)
    neg_assert: list[
        tuple[str, str, tuple[bytes, dict[str, Any], dict[str, Any]], str, dict[str, Any]]
    ] = [
        (
            "bad-signature",
            "last signature byte flipped",
            assertion("n-sig", counter=10, tamper_sig=True),
            "bad_signature",
            {},
        ),
        (
            "wrong-origin",
            "clientDataJSON.origin is another site (validly signed)",
            assertion("n-origin", counter=10, origin="https://evil.example"),
            "origin_mismatch",
            {},
        ),
        (
            "cross-origin",
            "crossOrigin true",
            assertion("n-cross", counter=10, cross_origin=True),
            "origin_mismatch",
            {},
        ),
        (
            "create-type",
            "clientDataJSON.type webauthn.create in an assertion",
            assertion("n-type", counter=10, typ="webauthn.create"),
            "wrong_type",
            {},
        ),
        (
            "other-challenge",
            "clientDataJSON carries a challenge other than the one redeemed",
            assertion("n-challenge", counter=10, client_challenge=challenge("elsewhere")),
            "challenge_mismatch",
            {},
        ),
        (
            "other-rp",
            "rpIdHash of other.example",
            assertion("n-rp", counter=10, rp=hashlib.sha256(b"other.example").digest()),
            "rp_id_mismatch",
            {},
        ),
        (
            "no-up",
            "flags UP and UV clear (the device did not verify the user)",
            assertion("n-up", counter=10, flags=flag.ED),
            "user_not_present",
            {},
        ),
        (
            "up-without-uv",
            "UP set, UV clear",
            assertion("n-uv", counter=10, flags=flag.UP | flag.ED),
            "user_not_verified",
            {},
        ),
        (
            "backup-eligible",
            "BE set: devicebio keys are device-bound",
            assertion("n-be", counter=10, flags=flag.UP | flag.UV | flag.BE | flag.ED),
            "backup_flags_inconsistent",
            {},
        ),
        (
            "backed-up-not-eligible",
            "BS without BE",
            assertion("n-bs", counter=10, flags=flag.UP | flag.UV | flag.BS | flag.ED),
            "backup_flags_inconsistent",
            {},
        ),
        (
            "no-extension",
            "ED clear, no devicebio extension",
            assertion("n-noext", counter=10, ext=None, flags=flag.UP | flag.UV),
            "extension_missing",
            {},
        ),
        (
            "unsolicited-extension",
            "a second, unrequested extension",
            assertion("n-extra", counter=10, ext={**face_live.to_extensions(), "credProtect": 1}),
            "extension_invalid",
            {},
        ),
        (
            "score-in-extension",
            "a field 'sc' (a score) inside devicebio",
            assertion("n-score", counter=10, ext={"devicebio": bad_ext}),
            "extension_invalid",
            {},
        ),
        (
            "device-id-in-assertion",
            "the per-RP device id belongs to registration only",
            assertion(
                "n-devid", counter=10, ext=face_live_for("n-devid", device_id).to_extensions()
            ),
            "extension_invalid",
            {},
        ),
        (
            "counter-not-increased",
            "counter 3 again after the positive assertions",
            assertion("n-counter", counter=3, ext=pin.to_extensions()),
            "counter_regression",
            {},
        ),
        (
            "attested-data-in-assertion",
            "AT flag (with credential data) in an assertion",
            assertion(
                "n-at", counter=10, flags=flag.UP | flag.UV | flag.AT | flag.ED, attested=True
            ),
            "malformed",
            {},
        ),
        (
            "unknown-credential",
            "a credential id this RP never registered",
            assertion("n-unknown", counter=10, credential_id=b"\x00" * 32),
            "credential_unknown",
            {},
        ),
        (
            "liveness-required",
            "face without passed liveness, policy require_liveness=True",
            assertion("n-live", counter=10, ext=face_flat.to_extensions()),
            "policy_liveness_required",
            {"require_liveness": True},
        ),
        (
            "method-refused",
            "PIN, policy accepts face only",
            assertion("n-method", counter=10, ext=pin.to_extensions()),
            "policy_method_refused",
            {"accepted_methods": ["face"]},
        ),
    ]
    no_device_id = DevicebioExtension(
        method=Method.FACE, liveness=LivenessClaim.none(), model=model, assurance="moderate"
    )
    neg_reg = [
        (
            "reg-bad-signature",
            "attStmt.sig last byte flipped",
            registration(label="r-sig", tamper_sig=True),
            "bad_attestation",
        ),
        (
            "reg-fmt-none",
            "fmt 'none'",
            registration(label="r-none", fmt="none", stmt={}),
            "unsupported_format",
        ),
        (
            "reg-x5c",
            "packed with an x5c chain (full attestation) is not accepted",
            registration(
                label="r-x5c", stmt={"alg": -8, "sig": b"\x00" * 64, "x5c": [b"\x30\x00"]}
            ),
            "unsupported_format",
        ),
        (
            "reg-alg-mismatch",
            "attStmt.alg -7 for an EdDSA key",
            registration(label="r-alg", stmt={"alg": -7, "sig": b"\x00" * 64}),
            "bad_attestation",
        ),
        (
            "reg-no-device-id",
            "devicebio extension without the per-RP device id",
            registration(label="r-nodev", ext=no_device_id.to_extensions()),
            "extension_invalid",
        ),
        (
            "reg-no-uv",
            "UV clear at registration",
            registration(label="r-nouv", flags=flag.UP | flag.AT | flag.ED),
            "user_not_verified",
        ),
    ]
    return {
        "description": (
            "WebAuthn known answers v3, fully deterministic: a registration (packed "
            "self-attestation, EdDSA) and assertions signed with a PUBLISHED Ed25519 seed, "
            "RP example.com / https://example.com. Each positive must be rebuilt byte for "
            "byte and verified; each negative must be refused by verifier.verify_registration "
            "/ verify_assertion with the given verifier Reason. Negative assertions are "
            "checked against a store holding the registration and the three positive "
            "assertions (stored sign count 3). Never use this seed for anything real. "
            "v2 replaced v1, whose passed liveness claims named a plan of no challenge in "
            "particular: a verifier refuses those (liveness_mismatch) whatever its policy. "
            "v3 replaces v2 for liveness plan v2 (six prompts, 0.4-3.0 s delays, 2.5 s "
            "window; issue 13): v2's claims hash v1 plans and are refused likewise."
        ),
        "format_version": 3,
        "provenance": provenance("tests/vectors/_generate.py webauthn_kat_vectors()", True),
        "rp_id": RP_ID,
        "origin": ORIGIN,
        "user": "alice",
        "user_handle_hex": user_handle.hex(),
        "credential_seed_hex": seed.hex(),
        "credential_seed_derivation": "sha256('devicebio/test-vector/credential-key/v1')",
        "credential_public_key_hex": bytes(key.verify_key).hex(),
        "credential_id_hex": cred_id.hex(),
        "device_id_hex": device_id.hex(),
        "registration": {
            "challenge_hex": reg_challenge.hex(),
            "credential": reg_json,
            "bytes": reg_bytes,
            "extension_cbor_hex": cbor.encode(reg_ext.to_cbor_obj()).hex(),
        },
        "assertions": positives,
        "negative_assertions": [
            {
                "name": n,
                "why": w,
                "challenge_hex": ch.hex(),
                "credential": js,
                "policy": pol,
                "expect_reason": r,
            }
            for n, w, (ch, js, _), r, pol in neg_assert
        ],
        "negative_registrations": [
            {"name": n, "why": w, "challenge_hex": ch.hex(), "credential": js, "expect_reason": r}
            for n, w, (ch, js, _), r in neg_reg
        ],
    }


# --------------------------------------------------------------------------- vault


def payment_vectors() -> dict[str, Any]:
    """Secure Payment Confirmation assertions (payment.get) from a PUBLISHED credential seed.

    Every byte is fixed: the ``payment`` member, clientDataJSON (python-fido2's writer, as the
    device uses it), authenticatorData and the Ed25519 signature. Negative cases are what a
    till presents: the right bytes against another expected payment, or the wrong type.
    """
    from fido2.webauthn import AuthenticatorData, CollectedClientData

    from devicebio import protocol
    from devicebio.protocol import (
        Amount,
        DevicebioExtension,
        Instrument,
        LivenessClaim,
        Method,
        PaymentDetails,
    )

    rp_id, origin = "canteen.example", "https://canteen.example"
    flag = AuthenticatorData.FLAG
    key = nacl.signing.SigningKey(_seed("devicebio/test-vector/payment-credential-key/v1"))
    cred_id = _seed("devicebio/test-vector/payment-credential-id/v1")
    rp_hash = hashlib.sha256(rp_id.encode()).digest()
    model = "dlib_resnet_v1@8eba2436042a9c28"
    lunch = PaymentDetails(
        rp_id=rp_id,
        top_origin=origin,
        payee_name="School canteen",
        payee_origin=origin,
        total=Amount("EUR", "2.50"),
        instrument=Instrument("Student card 0042", "https://canteen.example/card.png"),
    )

    def challenge(label: str) -> bytes:
        return hashlib.sha256(f"devicebio/test-vector/payment-challenge/{label}".encode()).digest()

    def extension(label: str, method: Method) -> DevicebioExtension:
        if method is not Method.FACE:
            return DevicebioExtension(
                method=method, liveness=LivenessClaim.none(), assurance="weaker",
                sdk_version="0.1.0",
            )  # fmt: skip
        ch = challenge(label)
        plan = protocol.liveness_plan(ch)
        claim = LivenessClaim(
            "active-challenge",
            True,
            protocol.liveness_sequence_hash(ch, plan),
            protocol.minimum_frames(plan) + 60,
        )
        return DevicebioExtension(
            method=method, liveness=claim, model=model, assurance="strong", sdk_version="0.1.0"
        )

    def assertion(
        label: str, counter: int, payment: PaymentDetails | None, method: Method = Method.FACE
    ) -> dict[str, Any]:
        ch = challenge(label)
        auth = AuthenticatorData.create(
            rp_hash,
            flag.UP | flag.UV | flag.ED,
            counter,
            b"",
            extension(label, method).to_extensions(),
        )
        if payment is None:
            client = bytes(
                CollectedClientData.create(type="webauthn.get", challenge=ch, origin=origin)
            )
        else:
            client = protocol.payment_client_data(challenge=ch, origin=origin, payment=payment)
        signed = bytes(auth) + hashlib.sha256(client).digest()
        sig = key.sign(signed).signature
        return {
            "name": label,
            "challenge_hex": ch.hex(),
            "client_data_json": client.decode(),
            "authenticator_data_hex": bytes(auth).hex(),
            "signed_message_hex": signed.hex(),
            "signature_hex": sig.hex(),
            "credential": protocol.authentication_to_json(
                credential_id=cred_id,
                client_data_json=client,
                authenticator_data=bytes(auth),
                signature=sig,
                user_handle=None,
            ),
        }

    def changed(**kw: Any) -> dict[str, Any]:
        import dataclasses

        return dataclasses.replace(lunch, **kw).to_json()

    accepted = [
        {**assertion("face-2.50", 1, lunch), "expected_payment": lunch.to_json(),
         "expect": {"method": "face", "assurance": "moderate", "amount_micros": 2_500_000}},
        {**assertion("pin-2.50", 2, lunch, Method.PIN), "expected_payment": lunch.to_json(),
         "expect": {"method": "pin", "assurance": "weaker", "amount_micros": 2_500_000}},
    ]  # fmt: skip
    negatives = [
        # the 2.50 the user approved, each against what another till claims it asked for
        {**assertion(f"changed-{what}", 3, lunch), "expected_payment": exp,
         "expect_reason": "payment_mismatch",
         # a till charging USD has a USD policy (an EUR one refuses the request itself)
         **({"payment_policy": {"currency": "USD"}} if what == "currency" else {})}
        for what, exp in (
            ("amount", changed(total=Amount("EUR", "25.00"))),
            ("amount-spelling", changed(total=Amount("EUR", "2.5"))),
            ("currency", changed(total=Amount("USD", "2.50"))),
            ("payee", changed(payee_name="Tuck shop")),
            ("payee-origin", changed(payee_origin="https://tuckshop.example")),
            ("instrument", changed(instrument=Instrument("Parent card", lunch.instrument.icon))),
            ("top-origin", changed(top_origin="https://evil.example")),
        )
    ] + [
        {**assertion("sign-in-as-payment", 3, None), "expected_payment": lunch.to_json(),
         "expect_reason": "wrong_type"},
        {**assertion("face-25.00", 3, changed_obj := PaymentDetails.from_json(
            changed(total=Amount("EUR", "25.00")))), "expected_payment": changed_obj.to_json(),
         "expect_reason": "amount_above_method_limit"},
    ]  # fmt: skip
    base = lunch.to_json()

    def total(value: Any, currency: str = "EUR") -> dict[str, Any]:
        return base | {"total": {"currency": currency, "value": value}}

    def without(*names: str) -> dict[str, Any]:
        return {k: v for k, v in base.items() if k not in names}

    members = [
        {"name": name, "member": member}
        for name, member in (
            ("float-value", total(2.5)),
            ("lower-case-currency", total("2.50", "eur")),
            ("leading-zero", total("02.50")),
            ("negative", total("-2.50")),
            ("seven-decimals", total("2.5000001")),
            ("unknown-member", base | {"browserBoundPublicKey": "AA"}),
            ("no-instrument", without("instrument")),
            ("no-payee", without("payeeName", "payeeOrigin")),
            ("http-payee-origin", base | {"payeeOrigin": "http://canteen.example"}),
        )
    ]
    return {
        "format_version": 2,
        "description": "Secure Payment Confirmation (payment.get) assertions and payment members"
        " (docs/protocol.md, payments): byte-exact positives from a published seed, the"
        " refusals a till must give, malformed members and amount conversions. v2: face claims"
        " bound to liveness plan v2 (issue 13), which a verifier requires; v1's are refused",
        "provenance": provenance("payment_vectors", deterministic=True),
        "rp_id": rp_id,
        "origin": origin,
        "user": "student",
        "credential_id_hex": cred_id.hex(),
        "credential_key_seed_label": "devicebio/test-vector/payment-credential-key/v1",
        "public_key_cose_hex": cbor.encode(protocol.ed25519_cose_key(bytes(key.verify_key))).hex(),
        "payment_policy": {
            "currency": "EUR",
            "face_with_liveness": "20.00",
            "pin": "5.00",
            "security_key": "200.00",
            "daily_limit": "30.00",
        },
        "accepted": accepted,
        "negatives": negatives,
        "malformed_members": members,
        "amounts": [
            {"value": v, "micros": m}
            for v, m in (
                ("0", 0),
                ("2.50", 2_500_000),
                ("2.5", 2_500_000),
                ("0.000001", 1),
                ("999999999999.999999", 999_999_999_999_999_999),
            )
        ],
    }


def vault_vectors() -> dict[str, Any]:
    import numpy as np

    from devicebio.authenticator import CONSENT, FACE, FACE_KEY, _check_user
    from devicebio.fallback import AttemptLimiter, Pin, RecoveryCodes
    from devicebio.hazmat.credentials import Credentials, UserVerification
    from devicebio.protect import TemplateKey
    from devicebio.protocol import LivenessClaim, Method
    from devicebio.store.vault import HEADER, RawKey, Vault

    raw_key = _seed("devicebio/test-vector/vault-raw-key/v1")
    template_seed = _seed("devicebio/test-vector/template-key/v1")
    stream = hashlib.shake_256(b"devicebio/test-vector/synthetic-embedding/v1").digest(3 * 128)
    # Synthetic, not a face: three 128-d vectors with the norm (~0.6) of real dlib embeddings.
    synthetic = (np.frombuffer(stream, dtype=np.uint8).reshape(3, 128) / 255.0 - 0.5).astype(
        np.float32
    )
    synthetic = synthetic / np.linalg.norm(synthetic, axis=1, keepdims=True) * 0.6
    synthetic = synthetic.astype(np.float32)
    pin = "482916"
    reg_challenge = b"devicebio-vector-v1-vault-regist"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "vault"
        vault = Vault.create(root, RawKey(raw_key))
        creds = Credentials(vault)
        registration = creds.register(
            rp_id=RP_ID,
            origin=ORIGIN,
            challenge=reg_challenge,
            user_name="alice",
            user_handle=b"alice-handle-0001",
            verification=UserVerification(
                method=Method.PIN, liveness=LivenessClaim.none(), model=None, verified=True
            ),
        )
        Pin(vault).set(pin)
        codes = RecoveryCodes(vault).new(3)
        limiter = AttemptLimiter(vault, clock=lambda: float(T0))
        limiter.record_failure()
        limiter.record_failure()
        # The face records, with exactly the shapes Authenticator.enroll writes.
        rid = _check_user("alice")
        tkey = TemplateKey(template_seed)
        vault.put(FACE_KEY, rid, tkey.to_record())
        vault.put(
            CONSENT,
            rid,
            {"purpose": "sign-in to example.com", "retention_days": 365, "at": float(T0)},
        )
        vault.put(
            FACE,
            rid,
            {
                "user": "alice",
                "model": "dlib_resnet_v1@8eba2436042a9c28",
                "templates": [np.asarray(t, "<f4").tobytes() for t in tkey.protect(synthetic)],
                "enrolled_at": float(T0),
                "expires_at": float(T0 + 365 * 86400),
            },
        )
        records = []
        for kind, record_id in (
            ("device", "secret"),
            ("credential", vault.ids("credential")[0]),
            ("knowledge", "pin"),
            ("knowledge", "recovery"),
            ("attempts", "face"),
            (FACE_KEY, rid),
            (CONSENT, rid),
            (FACE, rid),
        ):
            slot = vault._slot(kind, record_id)
            blob = (root / kind / slot.hex()).read_bytes()
            value = vault.get(kind, record_id)
            records.append(
                {
                    "kind": kind,
                    "id": record_id,
                    "file": f"{kind}/{slot.hex()}",
                    "slot_hex": slot.hex(),
                    "aad_hex": vault._aad(kind, slot).hex(),
                    "record_hex": blob.hex(),
                    "expected_value": jsonable(value),
                    "expected_value_cbor_hex": cbor2.dumps(value).hex(),
                }
            )
        header = (root / HEADER).read_bytes()
        consent = next(r for r in records if r["kind"] == CONSENT)
        blob = bytes.fromhex(consent["record_hex"])
        bob = _check_user("bob")
        bob_slot = vault._slot(CONSENT, bob)
        face_key_slot = vault._slot(FACE_KEY, rid)

        def flip(data: bytes, index: int) -> bytes:
            out = bytearray(data)
            out[index] ^= 0x01
            return bytes(out)

        tampered = [
            (
                "ciphertext-bit-flip",
                "last byte (Poly1305 tag) changed",
                CONSENT,
                rid,
                CONSENT,
                consent["slot_hex"],
                flip(blob, len(blob) - 1),
                "record_tampered",
            ),
            (
                "nonce-bit-flip",
                "first nonce byte changed",
                CONSENT,
                rid,
                CONSENT,
                consent["slot_hex"],
                flip(blob, 20),
                "record_tampered",
            ),
            (
                "slot-field-changed",
                "a byte of the stored slot changed",
                CONSENT,
                rid,
                CONSENT,
                consent["slot_hex"],
                flip(blob, 4),
                "record_swapped",
            ),
            (
                "magic-changed",
                "DBV1 -> DBV0",
                CONSENT,
                rid,
                CONSENT,
                consent["slot_hex"],
                b"DBV0" + blob[4:],
                "record_corrupt",
            ),
            (
                "torn-empty",
                "a zero-length file (torn write)",
                CONSENT,
                rid,
                CONSENT,
                consent["slot_hex"],
                b"",
                "record_corrupt",
            ),
            (
                "truncated-in-header",
                "first 10 bytes only",
                CONSENT,
                rid,
                CONSENT,
                consent["slot_hex"],
                blob[:10],
                "record_corrupt",
            ),
            (
                "truncated-body",
                "header, nonce and 15 bytes: shorter than a tag",
                CONSENT,
                rid,
                CONSENT,
                consent["slot_hex"],
                blob[: 20 + 24 + 15],
                "record_tampered",
            ),
            (
                "copied-to-other-user",
                "alice's consent file placed in bob's consent slot",
                CONSENT,
                bob,
                CONSENT,
                bob_slot.hex(),
                blob,
                "record_swapped",
            ),
            (
                "copied-with-slot-rewritten",
                "same, with the stored slot rewritten to bob's: the "
                "associated data no longer matches",
                CONSENT,
                bob,
                CONSENT,
                bob_slot.hex(),
                blob[:4] + bob_slot + blob[20:],
                "record_tampered",
            ),
            (
                "copied-to-other-kind",
                "alice's consent file placed in her face_key slot",
                FACE_KEY,
                rid,
                FACE_KEY,
                face_key_slot.hex(),
                blob,
                "record_swapped",
            ),
            (
                "copied-to-other-kind-slot-rewritten",
                "same, stored slot rewritten",
                FACE_KEY,
                rid,
                FACE_KEY,
                face_key_slot.hex(),
                blob[:4] + face_key_slot + blob[20:],
                "record_tampered",
            ),
        ]
    header_obj = cbor2.loads(header)
    bumped = dict(header_obj, v=2)
    other_id = dict(header_obj, id=bytes(16))
    return {
        "description": (
            "A devicebio vault (schema version 1) opened with a raw 32-byte key: its header "
            "and one sealed record of every kind the SDK writes. Sealing uses random nonces, "
            "so these bytes were produced once; any later version must still OPEN them to "
            "'expected_value', and refuse every tampered variant with the given Reason."
        ),
        "format_version": 1,
        "provenance": provenance(
            "tests/vectors/_generate.py vault_vectors(): Vault.create(RawKey), "
            "Credentials.register, Pin.set, RecoveryCodes.new(3), "
            "AttemptLimiter.record_failure x2 (clock fixed), and vault.put of face_key/"
            "consent/face in the shapes Authenticator.enroll writes (templates of a "
            "synthetic, non-face vector)",
            False,
        ),
        "raw_key_hex": raw_key.hex(),
        "raw_key_derivation": "sha256('devicebio/test-vector/vault-raw-key/v1')",
        "header_hex": header.hex(),
        "header": jsonable(header_obj),
        "records": records,
        "facts": {
            "user": "alice",
            "face_record_id": rid,
            "pin": pin,
            "recovery_codes": codes,
            "attempts_clock": T0,
            "template_key_seed_hex": template_seed.hex(),
            "synthetic_embeddings_f32le_hex": [v.astype("<f4").tobytes().hex() for v in synthetic],
            "rp_id": RP_ID,
            "origin": ORIGIN,
            "registration_challenge_hex": reg_challenge.hex(),
            "registration": registration.to_json(),
            "user_handle_hex": registration.user_handle.hex(),
            "device_id_hex": registration.device_id.hex(),
        },
        "tampered_records": [
            {
                "name": n,
                "why": w,
                "get_kind": gk,
                "get_id": gid,
                "write_to": f"{wk}/{ws}",
                "record_hex": b.hex(),
                "expect_reason": r,
            }
            for n, w, gk, gid, wk, ws, b, r in tampered
        ],
        "tampered_headers": [
            {
                "name": "schema-2",
                "why": "header v = 2",
                "header_hex": cbor2.dumps(bumped, canonical=True).hex(),
                "expect_reason": "schema_unsupported",
            },
            {
                "name": "vault-id-changed",
                "why": "header id replaced: the check value's associated data no longer matches",
                "header_hex": cbor2.dumps(other_id, canonical=True).hex(),
                "expect_reason": "wrong_key",
            },
            {
                "name": "not-cbor",
                "why": "garbage header",
                "header_hex": "ff00",
                "expect_reason": "record_corrupt",
            },
        ],
        "wrong_key": {
            "raw_key_hex": _seed("devicebio/test-vector/vault-wrong-key/v1").hex(),
            "expect_reason": "wrong_key",
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "only", nargs="*", help="extension, revocation, vault, webauthn and/or payment"
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    args = parser.parse_args(argv)
    makers = {
        "extension": ("devicebio-extension-v1.json", extension_vectors),
        "revocation": ("revocation-list-v1.json", revocation_vectors),
        "vault": ("vault-v1.json", vault_vectors),
        "webauthn": ("webauthn-kat-v3.json", webauthn_kat_vectors),
        "payment": ("payment-v2.json", payment_vectors),
    }
    unknown = set(args.only) - set(makers)
    if unknown:
        parser.error(f"unknown vector set(s): {sorted(unknown)}")
    for name in args.only or list(makers):
        filename, make = makers[name]
        path = HERE / filename
        if path.exists() and not args.force:
            print(f"{path} exists; keeping it (use --force to replace)")
            continue
        path.write_text(json.dumps(make(), indent=1) + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

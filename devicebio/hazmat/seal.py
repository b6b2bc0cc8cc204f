"""XChaCha20-Poly1305 sealing with associated data, and key derivation.

Nonces are always random (24 bytes), never a parameter: with XChaCha20's 192-bit nonce the
collision risk for random nonces is negligible, and callers cannot get it wrong.
"""

from __future__ import annotations

import hashlib

import nacl.bindings
import nacl.exceptions
import nacl.pwhash
import nacl.utils

KEY_SIZE = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_KEYBYTES
NONCE_SIZE = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
TAG_SIZE = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES
SALT_SIZE = nacl.pwhash.argon2id.SALTBYTES


class OpenFailed(Exception):
    """Authentication failed. Deliberately carries no detail (no oracle)."""


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = nacl.utils.random(NONCE_SIZE)
    ct = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce, key)
    return nonce + ct


def open_sealed(key: bytes, sealed: bytes, aad: bytes) -> bytes:
    if len(sealed) < NONCE_SIZE + TAG_SIZE:
        raise OpenFailed
    nonce, ct = sealed[:NONCE_SIZE], sealed[NONCE_SIZE:]
    try:
        return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(ct, aad, nonce, key)
    except nacl.exceptions.CryptoError:
        raise OpenFailed from None


def subkey(master: bytes, purpose: bytes) -> bytes:
    """Domain-separated 32-byte key: one master key, never reused across purposes."""
    return hashlib.blake2b(purpose, key=master, digest_size=32, person=b"devicebio-kdf").digest()


def argon2id_key(secret: bytes, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    return nacl.pwhash.argon2id.kdf(KEY_SIZE, secret, salt, opslimit=opslimit, memlimit=memlimit)

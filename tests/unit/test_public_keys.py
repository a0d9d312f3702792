"""`_keys.load_public_key` reads a canonical Ed25519 PEM without `cryptography`'s serialization module
and must agree with it on every input: the same key, the same key id, the same errors."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from aperio_plugins._keys import key_id, load_public_key


def _pem(public_key: object) -> bytes:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)  # type: ignore[attr-defined]


def _der_id(public_key: Ed25519PublicKey) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


@pytest.mark.parametrize("_", range(20))
def test_a_canonical_ed25519_pem_gives_the_same_key_and_id_as_cryptography(_):
    public = Ed25519PrivateKey.generate().public_key()
    loaded = load_public_key(_pem(public))
    assert isinstance(loaded, Ed25519PublicKey)
    assert loaded.public_bytes_raw() == public.public_bytes_raw()
    assert key_id(loaded) == _der_id(public)


def test_other_forms_and_types_go_to_cryptography_and_keep_its_answers():
    public = Ed25519PrivateKey.generate().public_key()
    crlf = _pem(public).replace(b"\n", b"\r\n")
    assert load_public_key(crlf).public_bytes_raw() == public.public_bytes_raw()  # type: ignore[attr-defined]
    with_comment = b"# the author's key\n" + _pem(public)
    assert type(load_public_key(with_comment)) is type(serialization.load_pem_public_key(with_comment))
    ec_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    assert isinstance(load_public_key(_pem(ec_key)), ec.EllipticCurvePublicKey)  # refused by type later


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n",
        b"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n",  # the prefix, no key
        # the Ed25519 prefix with one byte flipped: not an Ed25519 SubjectPublicKeyInfo
        b"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VxAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n",
    ],
)
def test_malformed_input_fails_as_cryptography_fails(data):
    def error(load: Callable[[bytes], object]) -> tuple[type[BaseException], str] | None:
        try:
            load(data)
        except ValueError as exc:
            return type(exc), str(exc)
        return None

    ours = error(load_public_key)
    assert ours is not None
    assert ours == error(serialization.load_pem_public_key)

"""Encryption at rest (README "Data at rest"): what the store writes of a certificate is ciphertext, and what
it keeps of a personal identity number (PIN) for lookups is a keyed hash.

Each certificate has a data key of its own (32 random bytes, AES-256-GCM) that seals its document and
its patient's PIN. The data key is stored wrapped (AES-256-GCM again) under a key-encryption key (KEK)
from configuration; the ``KeyRing`` holds the KEKs by id, one current (it wraps new data keys) and
the others decrypt-only, so that a rotation (``store/rotation.py``) can re-wrap every data key while
the service keeps reading.

Every ciphertext carries associated data naming what it is (a versioned label) and the certificate
id of its row, and a wrapped key also its KEK's id: a ciphertext or wrapped key copied to another row
fails its check instead of showing that row's caller another patient's data. A failed check or a
missing KEK is ``errors.StoredDataUnreadable`` (``KekMissing``), whose message names no certificate,
patient or key material; the service answers it as an internal error.

Lists look patients up by ``KeyRing.lookup(pid)``, an HMAC-SHA256 under a lookup key of its own, so
the database holds no PIN in the clear. The primitives are the ``cryptography`` package's AESGCM and
the standard library's HMAC; nothing here is hand-written cryptography.
"""

from __future__ import annotations

import base64
import enum
import hmac
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from service.errors import KekMissing, StoredDataUnreadable

KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # GCM's standard nonce; random per encryption, far below the 2**32 limit per key
TAG_BYTES = 16
# KEK ids are stored with every certificate row (tables.certificates.kek_id).
KEK_ID_MAX = 32


class Purpose(enum.Enum):
    """What a ciphertext under a data key is: part of its associated data, so that one can never be
    opened as the other (the patient's PIN as a document, or the reverse)."""

    DOCUMENT = "document"
    PATIENT = "patient"


def _associated_data(label: str, *parts: str) -> bytes:
    # The label is versioned so that a later format can tell its ciphertexts apart. Parts are joined
    # by NUL, which neither KEK ids (checked) nor certificate ids (XSD strings) contain.
    return "\x00".join((f"intygstjanst:{label}:v1", *parts)).encode("utf-8")


def _seal(key: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated_data)


def _open(key: bytes, sealed: bytes, associated_data: bytes) -> bytes:
    if len(sealed) < NONCE_BYTES + TAG_BYTES:
        raise StoredDataUnreadable("a stored ciphertext is too short to be one")
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated_data)
    except InvalidTag:
        raise StoredDataUnreadable("a stored ciphertext failed its integrity check") from None


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def seal(data_key: bytes, certificate_id: str, purpose: Purpose, plaintext: bytes) -> bytes:
    """``nonce || ciphertext || tag``, bound to the certificate's row and the purpose."""
    return _seal(data_key, plaintext, _associated_data(purpose.value, certificate_id))


def open_sealed(data_key: bytes, certificate_id: str, purpose: Purpose, sealed: bytes) -> bytes:
    return _open(data_key, sealed, _associated_data(purpose.value, certificate_id))


@dataclass(frozen=True, slots=True)
class WrappedKey:
    kek_id: str
    wrapped: bytes = field(repr=False)


def decode_key(text: str, what: str) -> bytes:
    """A key as configuration writes it: the base64 of 32 bytes. The message never quotes the text."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except ValueError:
        raise ValueError(f"{what} is not base64") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"{what} must be {KEY_BYTES} bytes (base64 of 32 random bytes), not {len(key)}")
    return key


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


@dataclass(frozen=True, slots=True)
class KeyRing:
    """The KEKs by id (``current`` wraps new data keys; the others only unwrap) and the lookup key."""

    current: str
    keks: Mapping[str, bytes] = field(repr=False)
    lookup_key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        for kek_id, key in self.keks.items():
            if not kek_id or len(kek_id) > KEK_ID_MAX or not kek_id.isascii() or not kek_id.isprintable():
                raise ValueError(f"a KEK id must be 1 to {KEK_ID_MAX} printable ASCII characters")
            if any(c in kek_id for c in ":,\x00 "):
                raise ValueError("a KEK id may not hold ':', ',' or spaces")
            if len(key) != KEY_BYTES:
                raise ValueError(f"the KEK {kek_id!r} must be {KEY_BYTES} bytes")
        if self.current not in self.keks:
            raise ValueError(f"the current KEK {self.current!r} is not among the keys")
        if len(self.lookup_key) != KEY_BYTES:
            raise ValueError(f"the lookup key must be {KEY_BYTES} bytes")
        if any(hmac.compare_digest(self.lookup_key, key) for key in self.keks.values()):
            raise ValueError("the lookup key must differ from every KEK")

    @classmethod
    def generate(cls, kek_id: str = "dev-1") -> KeyRing:
        """Fresh random keys (the development profile's, written once to a local file)."""
        return cls(current=kek_id, keks={kek_id: new_data_key()}, lookup_key=new_data_key())

    def lookup(self, pid: str) -> str:
        """The keyed hash a PIN is stored and looked up by: HMAC-SHA256, base64url without padding
        (43 characters; mostly letters, so no run of it reads as an identity number in a dump)."""
        digest = hmac.digest(self.lookup_key, pid.encode("utf-8"), "sha256")
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def wrap(self, certificate_id: str, data_key: bytes) -> WrappedKey:
        aad = _associated_data("data-key", self.current, certificate_id)
        return WrappedKey(self.current, _seal(self.keks[self.current], data_key, aad))

    def unwrap(self, certificate_id: str, wrapped: WrappedKey) -> bytes:
        kek = self.keks.get(wrapped.kek_id)
        if kek is None:
            raise KekMissing(
                f"a data key is wrapped under the KEK {wrapped.kek_id!r}, which is not configured"
            )
        return _open(kek, wrapped.wrapped, _associated_data("data-key", wrapped.kek_id, certificate_id))


# --- Loading the key ring from what configuration holds (service/loader.py reads the files) -----------


def keyring_from_base64(current: str, keks: Mapping[str, str], lookup_key: str, *, where: str) -> KeyRing:
    """The key ring of keys written as base64 (a keys file's). Messages name ``where`` and the key,
    never key material."""
    decoded = {kek_id: decode_key(key, f"{where}: the KEK {kek_id!r}") for kek_id, key in keks.items()}
    try:
        return KeyRing(current, decoded, decode_key(lookup_key, f"{where}: the lookup key"))
    except ValueError as exc:
        raise ValueError(str(exc)) from None


def keyring_from_variables(kek: str, lookup_key: str) -> KeyRing:
    """The key ring of ``INTYG_KEK`` (``<id>:<base64>[,<id>:<base64>...]``, the first current) and
    ``INTYG_LOOKUP_KEY`` (base64)."""
    keks: dict[str, bytes] = {}
    for entry in kek.split(","):
        kek_id, colon, key = entry.strip().partition(":")
        if not colon or not kek_id:
            raise ValueError("INTYG_KEK must read <id>:<base64>[,<id>:<base64>...]")
        if kek_id in keks:
            raise ValueError(f"INTYG_KEK names the KEK {kek_id!r} twice")
        keks[kek_id] = decode_key(key, f"INTYG_KEK: the KEK {kek_id!r}")
    return KeyRing(next(iter(keks)), keks, decode_key(lookup_key, "INTYG_LOOKUP_KEY"))


def keys_file_text(ring: KeyRing) -> str:
    """``ring`` as a keys file holds it (README.md, "Data at rest"; ``config.KeysFile``)."""
    return json.dumps(
        {
            "kek": {"current": ring.current, "keys": {k: encode_key(v) for k, v in ring.keks.items()}},
            "lookup_key": encode_key(ring.lookup_key),
        }
    )

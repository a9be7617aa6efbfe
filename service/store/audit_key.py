"""The Ed25519 keys of the audit log's checkpoints (README.md, "Audit log"), read from the files the
settings name (``service/loader.py`` passes them in).

The service signs with the private key of ``INTYG_AUDIT_SIGNING_KEY_FILE``. An auditor checks
checkpoints with the public keys of ``INTYG_AUDIT_VERIFY_KEYS_FILE`` (a rotated-out key stays there,
so its checkpoints still verify) and never needs the private key. In development, without a
configured key, one is generated once into ``INTYG_DEV_AUDIT_KEY_FILE``; the production profile
refuses to start without one (``Settings.unfit_to_serve``).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from service.store.audit_chain import Signer, key_id

_PUBLIC_PEM = re.compile(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.DOTALL)


def _private_key(pem: bytes, source: Path) -> Ed25519PrivateKey:
    try:
        key = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):  # cryptography's own message may quote the file's bytes
        raise ValueError(f"{source} holds no readable private key (PEM, PKCS#8, unencrypted)") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{source} holds no Ed25519 private key (PEM, PKCS#8)")
    return key


def _public_keys(pem: bytes, source: Path) -> list[Ed25519PublicKey]:
    keys = []
    for block in _PUBLIC_PEM.findall(pem):
        try:
            key = load_pem_public_key(block)
        except ValueError:
            raise ValueError(f"{source} holds a public key that cannot be read (PEM)") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"{source} holds a public key that is not Ed25519")
        keys.append(key)
    if not keys:
        raise ValueError(f"{source} holds no PEM public key")
    return keys


def _development_key(path: Path) -> Ed25519PrivateKey:
    """The development key, created on first use (mode 0600). Written to a temporary file and linked
    into place, which fails if the file exists: when several worker processes start at once, one key
    wins and every worker signs with it."""
    if not path.exists():
        pem = Ed25519PrivateKey.generate().private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(descriptor, "wb") as file:  # mkstemp creates it with mode 0600
                file.write(pem)
            with contextlib.suppress(FileExistsError):
                os.link(temporary, path)
        finally:
            os.unlink(temporary)
    return _private_key(path.read_bytes(), path)


def signer(key_file: Path | None, *, development_file: Path) -> Signer:
    """What the service signs checkpoints with: the key of ``key_file``, or else the development key
    of ``development_file`` (made on first use)."""
    if key_file is not None:
        return Signer(_private_key(key_file.read_bytes(), key_file))
    return Signer(_development_key(development_file))


def verify_keys(
    *, verify_keys_file: Path | None, signing_key_file: Path | None, development_file: Path | None
) -> dict[str, Ed25519PublicKey]:
    """The public keys checkpoints are checked with, by key id: the verify keys file's, the public half
    of the signing key, and the development key where ``development_file`` exists (never generated
    here)."""
    keys: list[Ed25519PublicKey] = []
    if verify_keys_file is not None:
        keys += _public_keys(verify_keys_file.read_bytes(), verify_keys_file)
    if signing_key_file is not None:
        keys.append(_private_key(signing_key_file.read_bytes(), signing_key_file).public_key())
    if development_file is not None and development_file.exists():
        keys.append(_development_key(development_file).public_key())
    return {key_id(key): key for key in keys}

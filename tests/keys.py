"""The keys of encryption at rest the tests run with (``service/store/crypto.py``), fixed so that a test
can open what the store wrote, and a second KEK for rotations. Never a real deployment's keys.

``settings_keys()`` gives them as an operator sets them in the environment (INTYG_KEK,
INTYG_LOOKUP_KEY), for ``Settings``.
"""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from service.store.crypto import KeyRing, encode_key

OLD_KEK = ("test-kek-1", bytes(range(32)))
NEW_KEK = ("test-kek-2", bytes(range(100, 132)))
LOOKUP_KEY = bytes(range(200, 232))

KEYRING = KeyRing(OLD_KEK[0], dict([OLD_KEK]), LOOKUP_KEY)


def keyring(*keks: tuple[str, bytes]) -> KeyRing:
    """A key ring of these KEKs, the first current, with the tests' lookup key."""
    return KeyRing(keks[0][0], dict(keks), LOOKUP_KEY)


def settings_keys(ring: KeyRing = KEYRING) -> dict[str, Any]:
    """``Settings`` arguments naming ``ring``'s keys, its current KEK first."""
    ordered = [ring.current, *(k for k in ring.keks if k != ring.current)]
    return {
        "kek": SecretStr(",".join(f"{k}:{encode_key(ring.keks[k])}" for k in ordered)),
        "lookup_key": SecretStr(encode_key(ring.lookup_key)),
    }


def key_of(pid: str) -> str:
    """What the store keeps of a personal identity number for lookups."""
    return KEYRING.lookup(pid)

"""Encryption at rest, the primitives (``service/store/crypto.py``) and the keys' configuration
(``Settings.keyring``). The store's use of them, on SQLite and PostgreSQL, through the real app, is in
``tests/integration/test_encryption_at_rest.py``; the database dumps in
``tests/integration/test_database_dump.py``.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from service import loader
from service.config import Settings
from service.errors import KekMissing, StoredDataUnreadable
from service.store import crypto
from service.store.crypto import KeyRing, Purpose, WrappedKey
from tests.keys import KEYRING, NEW_KEK, OLD_KEK, keyring, settings_keys

DOCUMENT = b"<intyg><diagnos>Arbetsplatsolycka</diagnos></intyg>"


def test_a_sealed_document_opens_with_its_key_for_its_row() -> None:
    key = crypto.new_data_key()
    sealed = crypto.seal(key, "cert-1", Purpose.DOCUMENT, DOCUMENT)

    assert crypto.open_sealed(key, "cert-1", Purpose.DOCUMENT, sealed) == DOCUMENT
    assert DOCUMENT not in sealed and b"Arbetsplatsolycka" not in sealed


def test_the_same_document_sealed_twice_gives_different_ciphertexts() -> None:
    key = crypto.new_data_key()
    first, second = (crypto.seal(key, "cert-1", Purpose.DOCUMENT, DOCUMENT) for _ in range(2))
    assert first != second  # a fresh nonce each time
    assert len(first) == crypto.NONCE_BYTES + len(DOCUMENT) + 16  # nonce, ciphertext, GCM tag


@pytest.mark.parametrize("position", [0, crypto.NONCE_BYTES, crypto.NONCE_BYTES + 5, -1])
def test_a_ciphertext_altered_anywhere_fails_its_check(position: int) -> None:
    key = crypto.new_data_key()
    sealed = bytearray(crypto.seal(key, "cert-1", Purpose.DOCUMENT, DOCUMENT))
    sealed[position] ^= 0x01

    with pytest.raises(StoredDataUnreadable):
        crypto.open_sealed(key, "cert-1", Purpose.DOCUMENT, bytes(sealed))


def test_a_truncated_ciphertext_fails_its_check() -> None:
    key = crypto.new_data_key()
    sealed = crypto.seal(key, "cert-1", Purpose.DOCUMENT, DOCUMENT)
    for cut in (sealed[:-1], sealed[:20], sealed[:5], b""):
        with pytest.raises(StoredDataUnreadable):
            crypto.open_sealed(key, "cert-1", Purpose.DOCUMENT, cut)


def test_a_ciphertext_opened_as_another_rows_fails_its_check() -> None:
    key = crypto.new_data_key()
    sealed = crypto.seal(key, "cert-1", Purpose.DOCUMENT, DOCUMENT)

    with pytest.raises(StoredDataUnreadable):
        crypto.open_sealed(key, "cert-2", Purpose.DOCUMENT, sealed)


def test_a_patients_number_cannot_be_opened_as_a_document_or_the_reverse() -> None:
    key = crypto.new_data_key()
    number = crypto.seal(key, "cert-1", Purpose.PATIENT, b"191212121212")
    document = crypto.seal(key, "cert-1", Purpose.DOCUMENT, DOCUMENT)

    with pytest.raises(StoredDataUnreadable):
        crypto.open_sealed(key, "cert-1", Purpose.DOCUMENT, number)
    with pytest.raises(StoredDataUnreadable):
        crypto.open_sealed(key, "cert-1", Purpose.PATIENT, document)


def test_a_ciphertext_under_another_data_key_fails_its_check() -> None:
    sealed = crypto.seal(crypto.new_data_key(), "cert-1", Purpose.DOCUMENT, DOCUMENT)
    with pytest.raises(StoredDataUnreadable):
        crypto.open_sealed(crypto.new_data_key(), "cert-1", Purpose.DOCUMENT, sealed)


def test_a_wrapped_data_key_unwraps_for_its_row_under_its_kek() -> None:
    data_key = crypto.new_data_key()
    wrapped = KEYRING.wrap("cert-1", data_key)

    assert wrapped.kek_id == KEYRING.current
    assert data_key not in wrapped.wrapped
    assert KEYRING.unwrap("cert-1", wrapped) == data_key


def test_a_wrapped_data_key_moved_to_another_row_fails_its_check() -> None:
    wrapped = KEYRING.wrap("cert-1", crypto.new_data_key())
    with pytest.raises(StoredDataUnreadable):
        KEYRING.unwrap("cert-2", wrapped)


def test_a_wrapped_data_key_altered_fails_its_check() -> None:
    wrapped = KEYRING.wrap("cert-1", crypto.new_data_key())
    altered = bytearray(wrapped.wrapped)
    altered[-3] ^= 0x80
    with pytest.raises(StoredDataUnreadable):
        KEYRING.unwrap("cert-1", WrappedKey(wrapped.kek_id, bytes(altered)))


def test_a_data_key_under_a_wrong_kek_fails_and_one_under_an_unknown_kek_is_named() -> None:
    wrapped = KEYRING.wrap("cert-1", crypto.new_data_key())
    # The same KEK id with other key bytes (a keys file mixed up): the check fails.
    impostor = KeyRing(OLD_KEK[0], {OLD_KEK[0]: NEW_KEK[1]}, KEYRING.lookup_key)
    with pytest.raises(StoredDataUnreadable) as failed:
        impostor.unwrap("cert-1", wrapped)
    assert not isinstance(failed.value, KekMissing)
    # A key ring without that KEK at all: a clear error naming the KEK (an id, not key material).
    with pytest.raises(KekMissing, match=OLD_KEK[0]):
        keyring(NEW_KEK).unwrap("cert-1", wrapped)


def test_a_data_key_claimed_to_be_under_another_kek_fails_its_check() -> None:
    both = keyring(NEW_KEK, OLD_KEK)
    wrapped = keyring(OLD_KEK).wrap("cert-1", crypto.new_data_key())
    with pytest.raises(StoredDataUnreadable):
        both.unwrap("cert-1", WrappedKey(NEW_KEK[0], wrapped.wrapped))


def test_a_key_ring_unwraps_under_its_old_keks_and_wraps_under_the_current_one() -> None:
    data_key = crypto.new_data_key()
    old = keyring(OLD_KEK).wrap("cert-1", data_key)
    rotated = keyring(NEW_KEK, OLD_KEK)

    assert rotated.unwrap("cert-1", old) == data_key
    rewrapped = rotated.wrap("cert-1", data_key)
    assert rewrapped.kek_id == NEW_KEK[0]
    assert keyring(NEW_KEK).unwrap("cert-1", rewrapped) == data_key


def test_a_lookup_is_a_keyed_hash_the_same_for_the_same_number_and_no_number() -> None:
    found = KEYRING.lookup("191212121212")

    assert found == KEYRING.lookup("191212121212")
    assert found != KEYRING.lookup("197705232382")
    assert len(found) == 43 and not any(run in found for run in ("1912", "121212"))
    # Keyed: another lookup key gives another hash, so the numbers cannot be hashed and matched
    # by whoever reads only the database.
    other = KeyRing(KEYRING.current, KEYRING.keks, bytes(32))
    assert other.lookup("191212121212") != found


def test_no_key_material_is_in_a_key_rings_repr() -> None:
    text = repr(KEYRING) + repr(KEYRING.wrap("cert-1", crypto.new_data_key()))
    for key in (*KEYRING.keks.values(), KEYRING.lookup_key):
        assert crypto.encode_key(key) not in text and str(key) not in text


@pytest.mark.parametrize(
    ("current", "keks", "lookup", "problem"),
    [
        ("a", {"a": bytes(16)}, bytes(range(32)), "32 bytes"),
        ("b", {"a": bytes(32)}, bytes(range(32)), "not among"),
        ("a", {"a": bytes(32)}, bytes(32), "differ"),
        ("a", {"a": bytes(32)}, bytes(31), "lookup key"),
        ("a:b", {"a:b": bytes(32)}, bytes(range(32)), "may not"),
        ("", {"": bytes(32)}, bytes(range(32)), "KEK id"),
        ("x" * 33, {"x" * 33: bytes(32)}, bytes(range(32)), "KEK id"),
    ],
)
def test_an_unusable_key_ring_is_refused(
    current: str, keks: dict[str, bytes], lookup: bytes, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        KeyRing(current, keks, lookup)


# --- configuration --------------------------------------------------------------------------------


def write_keys_file(path: Path, ring: KeyRing) -> Path:
    path.write_text(
        json.dumps(
            {
                "kek": {
                    "current": ring.current,
                    "keys": {k: crypto.encode_key(v) for k, v in ring.keks.items()},
                },
                "lookup_key": crypto.encode_key(ring.lookup_key),
            }
        ),
        "utf-8",
    )
    return path


def test_the_keys_come_from_a_keys_file(tmp_path: Path) -> None:
    ring = keyring(NEW_KEK, OLD_KEK)
    settings = Settings(
        keys_file=write_keys_file(tmp_path / "keys.json", ring), dev_keys_file=tmp_path / "dev.json"
    )

    assert settings.keys_configured
    assert loader.keyring(settings) == ring
    assert not (tmp_path / "dev.json").exists()


def test_the_keys_come_from_the_environment_the_first_kek_current(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ring = keyring(NEW_KEK, OLD_KEK)
    for name, value in settings_keys(ring).items():
        monkeypatch.setenv(f"INTYG_{name.upper()}", value.get_secret_value())
    settings = Settings(dev_keys_file=tmp_path / "dev.json")

    assert loader.keyring(settings) == ring
    assert loader.keyring(settings).current == NEW_KEK[0]
    assert "test-kek" not in repr(settings)  # SecretStr: the variable is not shown
    assert crypto.encode_key(NEW_KEK[1]) not in repr(settings)


def test_the_development_profile_generates_its_keys_once_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "intygstjanst-dev-keys.json"
    settings = Settings(dev_keys_file=path)

    first = loader.keyring(settings)

    assert not settings.keys_configured
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert loader.keyring(Settings(dev_keys_file=path)) == first
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


def test_generated_development_keys_never_replace_a_file_written_meanwhile(tmp_path: Path) -> None:
    # Two workers starting at once: the one file the first wrote wins for both.
    path = tmp_path / "intygstjanst-dev-keys.json"
    earlier = write_keys_file(tmp_path / "earlier.json", keyring(OLD_KEK))
    os.link(earlier, path)

    assert loader.keyring(Settings(dev_keys_file=path)) == keyring(OLD_KEK)


def test_production_refuses_to_serve_without_configured_keys(tmp_path: Path) -> None:
    settings = Settings(
        profile="production",
        database_url="postgresql://db.example/intyg",
        portal_jwks_file=tmp_path / "jwks.json",
        dev_keys_file=tmp_path / "dev.json",
    )
    assert any("INTYG_KEYS_FILE" in problem for problem in settings.unfit_to_serve())
    with pytest.raises(ValueError, match="no keys are configured"):
        loader.keyring(settings)
    assert not (tmp_path / "dev.json").exists()

    configured = settings.model_copy(update=settings_keys())
    assert not any("INTYG_KEYS_FILE" in problem for problem in configured.unfit_to_serve())


def test_no_profile_generates_keys_for_a_postgresql_database(tmp_path: Path) -> None:
    # Each process would make its own, and lose the others' certificates.
    settings = Settings(database_url="postgresql://db.example/intyg", dev_keys_file=tmp_path / "dev.json")

    assert any("INTYG_KEYS_FILE" in problem for problem in settings.unfit_to_serve())
    with pytest.raises(ValueError, match="embedded SQLite"):
        loader.keyring(settings)
    assert not (tmp_path / "dev.json").exists()
    assert settings.model_copy(update=settings_keys()).unfit_to_serve() == []


@pytest.mark.parametrize(
    "variables",
    [
        {"kek": SecretStr("k1:" + crypto.encode_key(bytes(32)))},  # no lookup key
        {"lookup_key": SecretStr(crypto.encode_key(bytes(32)))},  # no KEK
    ],
)
def test_a_kek_and_a_lookup_key_are_configured_together(variables: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="together"):
        Settings(dev_keys_file=tmp_path / "dev.json", **variables)


def test_a_keys_file_and_key_variables_are_not_configured_both(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not both"):
        Settings(keys_file=tmp_path / "keys.json", **settings_keys())


SECRET = crypto.encode_key(bytes(range(7, 39)))


@pytest.mark.parametrize(
    ("kek", "problem"),
    [
        ("k1", "<id>:<base64>"),
        (f":{SECRET}", "<id>:<base64>"),
        ("k1:not base64!", "not base64"),
        ("k1:" + crypto.encode_key(bytes(16)), "32 bytes"),
        (f"k1:{SECRET},k1:{SECRET}", "twice"),
    ],
)
def test_a_malformed_kek_variable_is_refused_without_quoting_it(
    kek: str, problem: str, tmp_path: Path
) -> None:
    settings = Settings(kek=SecretStr(kek), lookup_key=SecretStr(crypto.encode_key(bytes(range(32)))))
    with pytest.raises(ValueError, match=problem) as refused:
        loader.keyring(settings)
    assert SECRET not in str(refused.value) and "not base64!" not in str(refused.value)


def test_a_malformed_keys_file_is_refused_without_quoting_it(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"kek": {"current": "k1", "keys": {"k1": 42}}, "lookup_key": SECRET}), "utf-8")
    with pytest.raises(ValueError, match=r"kek\.keys\.k1") as refused:
        loader.keyring(Settings(keys_file=path))
    assert SECRET not in str(refused.value)

    path.write_text(
        json.dumps({"kek": {"current": "k2", "keys": {"k1": SECRET}}, "lookup_key": SECRET}), "utf-8"
    )
    with pytest.raises(ValueError, match="not among") as refused:
        loader.keyring(Settings(keys_file=path))
    assert SECRET not in str(refused.value)

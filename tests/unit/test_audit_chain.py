"""The audit log's hash chain and checkpoints, pure (``service/store/audit_chain.py``; README "Audit log").

The encoding and hash of a record, the checkpoints' signatures, and the verifier's verdict on each way
of tampering (``tests/tampering.py``), on synthetic records. The chain written by the real store, the
random trials on real records, ``verify-audit`` and its speed are in
``tests/integration/test_audit_log.py``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from service.store import audit_chain
from service.store.audit_chain import GENESIS, Head, Signer
from tests import tampering
from tests.tampering import Chain

AT = dt.datetime(2024, 5, 17, 9, 30, 0, 125000)
SIGNER = Signer(Ed25519PrivateKey.generate())
KEYS = {SIGNER.key_id: SIGNER.public_key}


# What records of each kind have beside their action (model.AuditRecord), as the store keeps it.
KINDS: list[dict[str, Any]] = [
    {"action": "read", "outcome": "ok"},
    {"action": "register", "outcome": "ok", "certificate_type": "LISJP"},
    {"action": "register", "outcome": "info"},
    {"action": "send", "outcome": "ok", "recipient": "FKASSA"},
    {"action": "set_status", "outcome": "ok", "status": "RECEIV", "recipient": "FKASSA"},
    {"action": "call", "outcome": "denied", "called": "GetCertificate:2", "reason": "CallerNotPermitted"},
    {"action": "read", "outcome": "denied", "reason": "NotPermitted"},
    {"action": "remove_care_copy", "outcome": "ok", "deleted": 1},
    {"action": "remove_care_copy", "outcome": "ok"},
    {"action": "withdraw_consent", "outcome": "ok", "deleted": 3},
    {"action": "withdraw_consent", "outcome": "info"},
    # An operator's hand-over export, read and refused (README "Hand-over before erasure"), and an erasure
    # with an export leaving a certificate changed since it: no typed value beside them.
    {"action": "export", "outcome": "ok"},
    {"action": "export", "outcome": "error", "reason": "CertificateNotFound"},
    {"action": "remove_care_copy", "outcome": "info"},
]
# ... and the words the same records were first written, and hashed, in: action and detail.
FIRST_WORDS = [
    ("read", ""),
    ("register", "LISJP"),
    ("register", "already exists"),
    ("send:FKASSA", ""),
    ("status:RECEIV:FKASSA", ""),
    ("call:GetCertificate:2", "CallerNotPermitted"),
    ("read", "NotPermitted"),
    ("remove_care_copy", "deleted"),
    ("remove_care_copy", "kept_for_citizen"),
    ("withdraw_consent", "deleted 3"),
    ("withdraw_consent", ""),
    ("export", ""),
    ("export", "CertificateNotFound"),
    ("remove_care_copy", ""),
]


def content(index: int) -> dict[str, Any]:
    return {
        "at": AT + dt.timedelta(seconds=index),
        "actor_kind": "care_system",
        "actor_id": "SE2321000016-WEBCERT",
        "actor_person_id": None,
        "channel": "soap",
        "patient_key": "191212121212",
        "certificate_ids": f"cert-{index}",
        "care_unit_id": "SE2321000016-UNIT1",
        "care_giver_id": "SE2321000016-GIVER1",
        "care_unit_name": "Vårdenheten",
        "care_giver_name": None,
        **dict.fromkeys(audit_chain.TYPED_COLUMNS),
        **KINDS[index % len(KINDS)],
    }


def a_chain(length: int = 120, *, every: int = 25) -> Chain:
    return tampering.chain_of([content(i) for i in range(length)], SIGNER, every=every)


# --- the encoding and the hash -----------------------------------------------------------------------


def test_the_encoding_does_not_depend_on_the_order_of_the_values() -> None:
    values = content(1)

    assert audit_chain.canonical(values) == audit_chain.canonical(dict(reversed(values.items())))


def test_the_encoding_tells_a_time_and_bytes_from_strings_that_spell_them() -> None:
    values: list[dict[str, object]] = [{"x": AT}, {"x": AT.isoformat()}, {"x": b"abc"}, {"x": "YWJj"}]

    assert len({audit_chain.canonical(v) for v in values}) == 4


def test_a_value_of_a_type_no_column_holds_cannot_be_hashed() -> None:
    with pytest.raises(TypeError):
        audit_chain.canonical({"x": object()})


def test_an_empty_value_hashes_as_an_absent_column_so_a_column_added_later_keeps_old_hashes() -> None:
    assert audit_chain.record_hash(GENESIS, {"a": "1", "new": None}) == audit_chain.record_hash(
        GENESIS, {"a": "1"}
    )
    assert audit_chain.record_hash(GENESIS, {"a": "1", "new": ""}) != audit_chain.record_hash(
        GENESIS, {"a": "1"}
    )


def test_every_stored_value_and_the_previous_hash_change_a_records_hash() -> None:
    values = content(1)
    original = audit_chain.record_hash(GENESIS, values)

    for column in values:
        changed = dict(values, **{column: "changed"})
        assert audit_chain.record_hash(GENESIS, changed) != original, column
    assert audit_chain.record_hash("1" * 64, values) != original


@pytest.mark.parametrize(("kind", "words"), list(enumerate(FIRST_WORDS)))
def test_a_record_hashes_as_in_the_words_it_was_first_written_in(kind: int, words: tuple[str, str]) -> None:
    """A record sealed before the typed columns keeps its hash once migrated to them, and back."""
    assert len(FIRST_WORDS) == len(KINDS)
    typed = content(kind)
    first = {k: v for k, v in typed.items() if k not in audit_chain.TYPED_COLUMNS}
    first["action"], first["detail"] = words

    assert audit_chain.first_written(typed) == {k: v for k, v in first.items() if v is not None}
    assert audit_chain.record_hash(GENESIS, typed) == audit_chain.record_hash(GENESIS, first)


@pytest.mark.parametrize("kind", range(len(KINDS)))
def test_every_typed_value_of_a_record_changes_its_hash_the_fold_is_one_to_one(kind: int) -> None:
    values = content(kind)
    original = audit_chain.record_hash(GENESIS, values)
    changes: list[object] = [None, "FKASSA", "RECEIV:FKASSA", "", "x", 0, 1, 2]

    for column in (*audit_chain.TYPED_COLUMNS, "action", "outcome"):
        for change in changes:
            if change != values[column]:
                changed = dict(values, **{column: change})
                assert audit_chain.record_hash(GENESIS, changed) != original, (column, change)


def test_the_chain_columns_are_not_hashed_with_the_content() -> None:
    values = content(1)

    with_chain = dict(values, seq=7, prev_hash="a" * 64, hash="b" * 64)

    assert audit_chain.record_hash(GENESIS, with_chain) == audit_chain.record_hash(GENESIS, values)


# --- checkpoints -------------------------------------------------------------------------------------


def test_a_checkpoint_verifies_with_its_signers_public_key() -> None:
    checkpoint = SIGNER.sign(1000, "ab" * 32, AT)

    assert audit_chain.signature_problem(checkpoint, KEYS) is None
    assert checkpoint.key_id == audit_chain.key_id(SIGNER.public_key)
    assert len(checkpoint.key_id) == 16


def test_a_checkpoint_reads_back_from_its_log_event_with_no_hex_run_that_looks_like_a_person() -> None:
    checkpoint = SIGNER.sign(1000, "1912121212120000" * 4, AT)

    logged = checkpoint.as_logged()

    assert audit_chain.Checkpoint.from_logged(json.loads(json.dumps(logged))) == checkpoint
    assert "191212121212" not in json.dumps(logged)
    with pytest.raises(ValueError):
        audit_chain.Checkpoint.from_logged({**logged, "signature_b64": "not base64!"})
    with pytest.raises(ValueError):
        audit_chain.Checkpoint.from_logged({"seq": 1})


@pytest.mark.parametrize(
    "change",
    [{"seq": 1001}, {"hash": "ac" * 32}, {"at": AT + dt.timedelta(microseconds=1)}, {"signature": "00" * 64}],
)
def test_a_checkpoint_changed_in_any_field_fails_its_signature(change: dict[str, Any]) -> None:
    checkpoint = dataclasses.replace(SIGNER.sign(1000, "ab" * 32, AT), **change)

    assert audit_chain.signature_problem(checkpoint, KEYS) == "signature invalid"


def test_a_checkpoint_of_another_key_is_named_unknown_and_verifies_once_its_key_is_given() -> None:
    rotated = Signer(Ed25519PrivateKey.generate())
    checkpoint = rotated.sign(5, "ab" * 32, AT)

    assert audit_chain.signature_problem(checkpoint, KEYS) == f"signed by an unknown key ({rotated.key_id})"
    assert audit_chain.signature_problem(checkpoint, KEYS | {rotated.key_id: rotated.public_key}) is None


def test_a_signature_that_is_not_hex_is_invalid_not_an_error() -> None:
    checkpoint = dataclasses.replace(SIGNER.sign(1, "ab" * 32, AT), signature="not hex")

    assert audit_chain.signature_problem(checkpoint, KEYS) == "signature invalid"


def test_a_signature_spelt_in_capitals_is_a_changed_signature() -> None:
    # The same bytes, but not what the signer stored: a flipped case bit must show like any other.
    signed = SIGNER.sign(1, "ab" * 32, AT)
    checkpoint = dataclasses.replace(signed, signature=signed.signature.upper())

    assert audit_chain.signature_problem(checkpoint, KEYS) == "signature invalid"


def test_an_export_manifest_verifies_with_its_signers_public_key_and_no_checkpoint_is_one() -> None:
    """The audit signing key also signs hand-over exports (README "Hand-over before erasure"), under a
    prefix of its own: neither signature can stand for the other."""
    manifest = b'{"format": "intygstjanst-export-v1"}\n'
    signature = SIGNER.sign_export(manifest)
    checkpoint = SIGNER.sign(1, "ab" * 32, AT)
    rotated = Signer(Ed25519PrivateKey.generate())

    assert audit_chain.export_signature_problem(manifest, SIGNER.key_id, signature, KEYS) is None
    assert audit_chain.export_signature_problem(manifest + b" ", SIGNER.key_id, signature, KEYS) == (
        "signature invalid"
    )
    assert audit_chain.export_signature_problem(manifest, rotated.key_id, signature, KEYS) == (
        f"signed by an unknown key ({rotated.key_id})"
    )
    as_manifest = audit_chain._signed_bytes(1, "ab" * 32, AT)[len(b"intygstjanst-audit-checkpoint-v1\n") :]
    assert (
        audit_chain.export_signature_problem(
            as_manifest, SIGNER.key_id, bytes.fromhex(checkpoint.signature), KEYS
        )
        == "signature invalid"
    )
    forged = dataclasses.replace(checkpoint, signature=signature.hex())
    assert audit_chain.signature_problem(forged, KEYS) == "signature invalid"


# --- the verdict -------------------------------------------------------------------------------------


def test_an_intact_chain_is_intact_with_its_counts() -> None:
    chain = a_chain(120, every=25)

    verdict = audit_chain.verify(chain.records, chain.checkpoints, chain.head, KEYS)

    assert verdict == audit_chain.Verdict(records=120, checkpoints=4, problem=None)
    assert verdict.intact


def test_an_empty_chain_whose_head_is_the_start_is_intact() -> None:
    verdict = audit_chain.verify([], [], Head(0, GENESIS), KEYS)

    assert verdict == audit_chain.Verdict(records=0, checkpoints=0, problem=None)


def problem(chain: Chain) -> tuple[int, str] | None:
    verdict = chain.verdict(KEYS)
    return None if verdict.problem is None else (verdict.problem.seq, verdict.problem.message)


def changed(chain: Chain, **changes: Any) -> Chain:
    return dataclasses.replace(chain, **changes)


def test_a_changed_value_is_named_as_its_record_whose_hash_does_not_match() -> None:
    chain = a_chain()
    chain.records[56]["care_unit_id"] = "SE2321000016-UNIT2"

    assert problem(chain) == (57, "record 57: its hash does not match its content")


def test_a_deleted_record_is_named_missing() -> None:
    chain = a_chain()
    del chain.records[56]

    assert problem(chain) == (57, "record 57: missing (seq jumps 56->58)")


def test_a_record_that_names_another_predecessor_does_not_follow() -> None:
    chain = a_chain()
    chain.records[56]["prev_hash"] = chain.records[54]["hash"]

    assert problem(chain) == (57, "record 57: does not follow record 56")
    chain.records[0]["prev_hash"] = "f" * 64
    assert problem(chain) == (1, "record 1: does not follow the start of the chain")


def test_a_repeated_seq_is_named() -> None:
    chain = a_chain()
    chain.records.insert(57, dict(chain.records[56]))

    assert problem(chain) == (57, "record 57: repeated or out of order (it comes after record 57)")


def test_a_cut_tail_is_named_against_the_head() -> None:
    chain = a_chain(120, every=200)

    assert problem(changed(chain, records=chain.records[:80])) == (
        81,
        "records after 80 are missing: the head names 120",
    )


def test_a_cut_tail_with_its_head_moved_back_is_named_by_a_logged_checkpoint() -> None:
    chain = a_chain(120, every=25)
    cut = changed(
        chain,
        records=chain.records[:80],
        head=Head(80, chain.records[79]["hash"]),
        checkpoints=[c for c in chain.checkpoints if c.seq <= 80],
    )

    assert problem(changed(cut, logged=[])) is None  # the database alone cannot tell
    assert problem(cut) == (81, "records after 80 are missing: the checkpoint at 100 names it")


def test_a_record_beyond_the_head_and_a_head_with_another_hash_are_named() -> None:
    chain = a_chain(120, every=200)

    assert problem(changed(chain, head=Head(119, chain.head.hash))) == (
        120,
        "record 120: beyond the head (119)",
    )
    assert problem(changed(chain, head=Head(120, "e" * 64))) == (
        120,
        "record 120: the head names another hash",
    )
    assert problem(changed(chain, head=None)) == (121, "the chain has no head")


def test_a_rehashed_rewrite_is_named_by_the_first_checkpoint_after_it() -> None:
    chain = a_chain(120, every=25)
    chain.records[56]["detail"] = "rewritten"
    tampering._rehash_from(chain.records, 56)
    rewritten = changed(chain, head=Head(120, chain.records[-1]["hash"]))

    assert problem(rewritten) == (
        75,
        "checkpoint at 75: the chain differs from the signed hash (records 51-75 were changed and rehashed)",
    )


def test_a_forged_or_unknown_checkpoint_is_named() -> None:
    chain = a_chain(120, every=25)
    forged = [*chain.checkpoints[:1], dataclasses.replace(chain.checkpoints[1], hash="d" * 64)]
    unknown = Signer(Ed25519PrivateKey.generate()).sign(60, chain.records[59]["hash"], AT)

    assert problem(changed(chain, checkpoints=forged, logged=[])) == (
        50,
        "checkpoint at 50: signature invalid",
    )
    assert problem(changed(chain, checkpoints=[unknown], logged=[])) == (
        60,
        f"checkpoint at 60: signed by an unknown key ({unknown.key_id})",
    )


def test_a_checkpoint_at_a_place_the_chain_never_had_is_named() -> None:
    chain = a_chain(10, every=200)
    nowhere = SIGNER.sign(0, GENESIS, AT)

    assert problem(changed(chain, checkpoints=[nowhere])) == (
        0,
        "checkpoint at 0: names no record of the chain",
    )


@pytest.mark.parametrize("kind", tampering.KINDS)
def test_each_kind_of_tampering_is_found_where_it_was_done(kind: str) -> None:
    """30 seeded trials of each kind on a synthetic chain; the real-record trials are in the
    integration test."""
    chain = a_chain(150, every=25)
    rng = random.Random(f"unit-{kind}")
    for _ in range(30):
        done = tampering.TAMPER[kind](chain, rng)

        verdict = done.chain.verdict(KEYS)

        assert verdict.problem is not None, done.description
        assert verdict.problem.seq == done.expected, (done.description, verdict.problem.message)
    assert chain.verdict(KEYS).intact, "tampering works on copies"


def test_checkpoints_from_the_log_and_the_database_at_the_same_place_are_both_checked() -> None:
    chain = a_chain(60, every=25)

    verdict = chain.verdict(KEYS)

    assert verdict == audit_chain.Verdict(records=60, checkpoints=4, problem=None)


def test_a_verdict_never_quotes_a_records_content() -> None:
    chain = a_chain()
    chain.records[3]["patient_key"] = "191212121213"

    verdict = chain.verdict(KEYS)

    assert verdict.problem is not None
    assert "1912121212" not in verdict.problem.message

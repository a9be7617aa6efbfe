"""The files of a hand-over export, written and verified (``service/handover.py``; README "Hand-over before
erasure"). What is exported, and its audit, on the fake store: ``tests/unit/test_operations.py``; the
commands on both stores: ``tests/integration/test_handover.py``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from service import handover
from service.model import CertificateWithDocument, HandedOver, Party, StatusCode, StatusEvent
from service.store.audit_chain import Signer
from tests.fakes import a_certificate, document_of

SIGNER = Signer(Ed25519PrivateKey.generate())
KEYS = {SIGNER.key_id: SIGNER.public_key}
GIVER = "SE2321000016-GIVER1"
AT = dt.datetime(2024, 5, 17, 9, 30)
EVENTS = (
    StatusEvent(StatusCode.RECEIV, Party.HSVARD, dt.datetime(2024, 5, 2, 10, 1, 0, 123456)),
    StatusEvent(StatusCode.SENTTO, Party.FKASSA, dt.datetime(2024, 5, 3, 8, 0)),
)
# Bytes no text encoding would keep: the export must hold the document exactly as registered.
ODD_DOCUMENT = b"<intyg>\r\n\xef\xbb\xbf\xff\x00 trailing </intyg>  "


def found(certificate_id: str, document: bytes | None = None) -> CertificateWithDocument:
    certificate = a_certificate(certificate_id, status_events=EVENTS, revoked=True)
    return CertificateWithDocument(
        certificate, document if document is not None else document_of(certificate_id)
    )


def exported(out: Path, *ids: str) -> Path:
    writer = handover.Writer(out)
    for certificate_id in ids:
        writer(found(certificate_id, ODD_DOCUMENT if certificate_id == "odd" else None))
    writer.finish(care_giver_id=GIVER, started_at=AT, finished_at=AT, signer=SIGNER)
    return out


def test_a_finished_export_verifies_and_holds_each_document_as_registered_with_its_metadata(
    tmp_path: Path,
) -> None:
    out = exported(tmp_path / "export", "c-1", "odd")

    export = handover.verify(out, KEYS)

    assert (export.care_giver_id, export.key_id, export.started_at) == (GIVER, SIGNER.key_id, AT)
    assert export.certificates == {
        "c-1": HandedOver("c-1", a_certificate("c-1").registered_at, EVENTS),
        "odd": HandedOver("odd", a_certificate("odd").registered_at, EVENTS),
    }
    assert (out / "certificates/000002/document.xml").read_bytes() == ODD_DOCUMENT
    metadata = json.loads((out / "certificates/000001/metadata.json").read_bytes())
    assert metadata == handover.metadata(found("c-1").certificate)
    assert (metadata["id"], metadata["patient"], metadata["revoked"]) == ("c-1", "191212121212", True)
    assert metadata["care_giver"] == {"id": GIVER, "name": a_certificate("c-1").care_unit.care_giver_name}
    assert [e["code"] for e in metadata["status_history"]] == ["RECEIV", "SENTTO"]


def test_an_export_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    out = exported(tmp_path / "export", "c-1")

    modes = {p.relative_to(out).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [out, *out.rglob("*")]}

    assert modes["."] == 0o700
    assert {m for p, m in modes.items() if (out / p).is_dir()} == {0o700}
    assert {m for p, m in modes.items() if (out / p).is_file()} == {0o600}
    assert sorted(p for p in modes if (out / p).is_file()) == [
        "certificates/000001/document.xml",
        "certificates/000001/metadata.json",
        "manifest.json",
        "manifest.sig",
    ]


def test_the_sets_sha256_is_what_sha256sum_prints_for_the_files_hashed(tmp_path: Path) -> None:
    out = exported(tmp_path / "export", "c-1", "c-2")
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.parent != out)
    manifest = json.loads((out / "manifest.json").read_bytes())

    printed = "".join(f"{hashlib.sha256((out / f).read_bytes()).hexdigest()}  {f}\n" for f in files)
    if shutil.which("sha256sum"):
        tool = subprocess.run(["sha256sum", *files], cwd=out, capture_output=True, text=True, check=True)
        assert tool.stdout == printed

    assert manifest["set_sha256"] == hashlib.sha256(printed.encode()).hexdigest()
    assert [(f["path"], f["size"]) for f in manifest["files"]] == [
        (f, (out / f).stat().st_size) for f in files
    ]


def test_an_existing_empty_directory_is_used_and_a_non_empty_one_refused(tmp_path: Path) -> None:
    empty, used = tmp_path / "empty", tmp_path / "used"
    empty.mkdir(mode=0o755)
    used.mkdir()
    (used / "old.txt").write_text("x")

    exported(empty, "c-1")
    with pytest.raises(handover.Unwritable, match="exists and is not an empty directory"):
        handover.Writer(used)

    assert stat.S_IMODE(empty.stat().st_mode) == 0o700
    assert handover.verify(empty, KEYS).certificates.keys() == {"c-1"}
    assert [p.name for p in used.iterdir()] == ["old.txt"]


def test_a_discarded_export_leaves_nothing_and_never_verifies(tmp_path: Path) -> None:
    out = tmp_path / "export"
    writer = handover.Writer(out)
    writer(found("c-1"))

    writer.discard()

    assert not out.exists()


def test_an_export_cut_off_before_its_manifest_does_not_verify(tmp_path: Path) -> None:
    out = tmp_path / "export"
    handover.Writer(out)(found("c-1"))

    with pytest.raises(handover.NotIntact, match=r"^manifest.json: missing \(an export that did not finish"):
        handover.verify(out, KEYS)


def _rewrite(path: Path, change: Callable[[bytes], bytes]) -> None:
    path.chmod(0o600)
    path.write_bytes(change(path.read_bytes()))


def _resign(out: Path, signer: Signer) -> None:
    signature = base64.b64encode(signer.sign_export((out / "manifest.json").read_bytes())).decode()
    (out / "manifest.sig").write_text(json.dumps({"key_id": signer.key_id, "signature_b64": signature}))


OTHER = Signer(Ed25519PrivateKey.generate())
TAMPERING: dict[str, tuple[Callable[[Path], object], str]] = {
    "a document changed": (
        lambda out: _rewrite(out / "certificates/000001/document.xml", lambda b: b.replace(b"F32", b"F33")),
        "certificates/000001/document.xml: its SHA-256 does not match the manifest",
    ),
    "metadata changed": (
        lambda out: _rewrite(
            out / "certificates/000002/metadata.json", lambda b: b.replace(b"true", b"false")
        ),
        "certificates/000002/metadata.json: its SHA-256 does not match the manifest",
    ),
    "a file added": (
        lambda out: (out / "certificates/000001/note.txt").write_text("x"),
        "certificates/000001/note.txt: not in the manifest",
    ),
    "a certificate removed": (
        lambda out: shutil.rmtree(out / "certificates/000002"),
        "certificates/000002/document.xml: missing",
    ),
    "the manifest changed": (
        lambda out: _rewrite(
            out / "manifest.json", lambda b: b.replace(b'"certificates": 2', b'"certificates": 1')
        ),
        "manifest.json: signature invalid",
    ),
    "the signature changed": (
        lambda out: _rewrite(
            out / "manifest.sig", lambda b: b.replace(b'"signature_b64": "', b'"signature_b64": "AA')
        ),
        "manifest.json: signature invalid",
    ),
    "the manifest re-signed by another key": (
        lambda out: _resign(out, OTHER),
        f"manifest.json: signed by an unknown key ({OTHER.key_id})",
    ),
    "the signature removed": (
        lambda out: (out / "manifest.sig").unlink(),
        "manifest.sig: missing (an export that did not finish has none)",
    ),
    "a document replaced by a link to a copy": (
        lambda out: _linked(out / "certificates/000001/document.xml"),
        "certificates/000001/document.xml: not a regular file",
    ),
}


def _linked(path: Path) -> None:
    outside = path.parents[3] / "outside.xml"
    os.replace(path, outside)
    path.symlink_to(outside)


@pytest.mark.parametrize("kind", TAMPERING)
def test_a_tampered_export_does_not_verify_and_says_where_in_one_line(tmp_path: Path, kind: str) -> None:
    out = exported(tmp_path / "export", "c-1", "c-2")
    tamper, reason = TAMPERING[kind]

    tamper(out)

    with pytest.raises(handover.NotIntact) as refused:
        handover.verify(out, KEYS)
    assert str(refused.value) == reason
    assert "191212121212" not in str(refused.value)


def test_an_export_verifies_with_the_public_key_alone_and_fails_without_it(tmp_path: Path) -> None:
    out = exported(tmp_path / "export", "c-1")

    assert handover.verify(out, {SIGNER.key_id: SIGNER.public_key}).key_id == SIGNER.key_id
    with pytest.raises(handover.NotIntact, match="signed by an unknown key"):
        handover.verify(out, {OTHER.key_id: OTHER.public_key})

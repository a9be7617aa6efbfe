"""The hand-over before erasure (README "Hand-over before erasure") as an operator runs it: ``export-care-giver``,
``verify-export`` and ``erase-care-giver --export`` through the command, on SQLite and PostgreSQL, beside the
app serving the same database.

The export's files and each kind of tampering are in ``tests/unit/test_handover.py``; what is exported and
erased, and its audit, on the fake store in ``tests/unit/test_operations.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from service.store.tables import documents
from tests.integration.rest import ANNA, BERTIL, CitizenApi, register
from tests.integration.soap import SoapClient
from tests.integration.test_encryption_at_rest import LISJP_TEXT, gone, read_for_care, service, swap
from tests.keys import settings_keys

pytestmark = pytest.mark.shared

GIVER = "SE2321000016-39KJ"
OPERATOR = ("--operator", "SE2321000016-OPS1")


@pytest.fixture
def app(database_url: str, tmp_path: Path) -> Iterator[tuple[SoapClient, TestClient]]:
    with service(database_url, tmp_path) as running:
        yield running


@pytest.fixture
def audit_keys(tmp_path: Path) -> tuple[Path, Path]:
    """The audit signing key the service signs with, and its public half alone, as the receiver has it."""
    key = Ed25519PrivateKey.generate()
    private, public = tmp_path / "audit-signing-key.pem", tmp_path / "audit-verify-keys.pem"
    private.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    private.chmod(0o600)
    public.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return private, public


class Operator:
    """``intygstjanst`` as the operator runs it on the store, signing with the audit key; and as the
    receiver runs ``verify-export``, with the public key only and no store."""

    def __init__(self, database_url: str, folder: Path, keys: tuple[Path, Path]) -> None:
        self.folder = folder
        base = {k: v for k, v in os.environ.items() if not k.startswith("INTYG_")}
        store_keys = {f"INTYG_{k.upper()}": v.get_secret_value() for k, v in settings_keys().items()}
        self.env = {
            **base,
            **store_keys,
            "INTYG_DATABASE_URL": database_url,
            "INTYG_AUDIT_SIGNING_KEY_FILE": str(keys[0]),
        }
        self.receiver = {**base, "INTYG_AUDIT_VERIFY_KEYS_FILE": str(keys[1])}

    def run(self, *args: str, receiver: bool = False) -> subprocess.CompletedProcess[str]:
        # The command of this checkout (PYTHONPATH, as the test process has it), not of an installed copy.
        return subprocess.run(
            [sys.executable, "-m", "service.cli", *args],
            cwd=self.folder,
            env=self.receiver if receiver else self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def export(self, out: Path, giver: str = GIVER) -> subprocess.CompletedProcess[str]:
        return self.run("export-care-giver", giver, *OPERATOR, "--out", str(out))

    def erase(self, *args: str, giver: str = GIVER) -> subprocess.CompletedProcess[str]:
        return self.run("erase-care-giver", giver, *OPERATOR, *args)


@pytest.fixture
def operator(database_url: str, tmp_path: Path, audit_keys: tuple[Path, Path]) -> Operator:
    return Operator(database_url, tmp_path, audit_keys)


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    output = done.stdout + done.stderr
    assert output.count("\n") == 1, output
    return output.strip()


def test_a_hand_over_exports_verifies_and_erases_what_it_holds_leaving_what_came_or_changed_after(
    app: tuple[SoapClient, TestClient], db: Engine, operator: Operator, tmp_path: Path
) -> None:
    soap, client = app
    anna = CitizenApi(client, ANNA)
    anna.consent()
    register(soap, "c-anna", ANNA)
    register(soap, "c-bertil", BERTIL)
    register(soap, "c-sent-later", ANNA)
    register(soap, "c-other", BERTIL, care_giver="SE2321000016-OTHER")
    registered = {c: anna.get(f"/certificates/{c}/document").content for c in ("c-anna", "c-sent-later")}
    out = tmp_path / "handover" / "SE2321000016-39KJ"
    out.parent.mkdir()

    exported = operator.export(out)

    assert exported.returncode == 0, exported.stderr
    assert one_line(exported).startswith(f"exported 3 certificates of {GIVER} to {out}; set SHA-256 ")
    assert out.stat().st_mode & 0o777 == 0o700
    documents_out = {
        json.loads((path.parent / "metadata.json").read_bytes())["id"]: path.read_bytes()
        for path in sorted(out.glob("certificates/*/document.xml"))
    }
    assert documents_out.keys() == {"c-anna", "c-bertil", "c-sent-later"}
    # Byte for byte what was registered, which the service gives back as the certificate's document.
    assert {c: documents_out[c] for c in registered} == registered
    assert all(t.encode() in documents_out["c-anna"] for t in LISJP_TEXT)
    # Each read is in its patient's access log, as the operator's export.
    [entry] = [
        e
        for e in anna.get("/access-log").json()["entries"]
        if e["action"] == "export" and e["certificates"] == ["c-anna"]
    ]
    assert (entry["outcome"], entry["accessed_by"], entry["channel"]) == ("ok", "operator", "cli")

    # The receiver checks it with the public key alone.
    verified = operator.run("verify-export", str(out), receiver=True)
    assert verified.returncode == 0, verified.stdout
    assert one_line(verified).startswith(f"export intact: 3 certificates of {GIVER}, exported ")

    # Meanwhile a certificate comes, and another changes (Anna sends it on).
    register(soap, "c-late", BERTIL)
    assert anna.post("/certificates/c-sent-later/send", {"recipient": "FKASSA"}).status_code == 200

    refused = operator.erase("--yes")
    assert refused.returncode == 2
    assert one_line(refused).startswith("refusing to erase: give --export DIR, a verified export of ")
    assert not any(gone(db, c) for c in ("c-anna", "c-bertil", "c-late"))
    counted = operator.erase("--export", str(out))
    assert (counted.returncode, counted.stdout) == (
        0,
        f"4 care copies of {GIVER} would be removed; the export holds 3, intact; nothing changed (run with --yes)\n",
    )

    erased = operator.erase("--export", str(out), "--yes")

    assert erased.returncode == 0, erased.stderr
    assert erased.stdout == (
        f"removed 2 care copies of {GIVER}: 1 kept for citizens with consent, 1 deleted permanently; "
        "1 not in the export and 1 changed since it stay (export again to hand them over)\n"
    )
    assert gone(db, "c-bertil")
    assert read_for_care(soap, "c-anna").is_fault and anna.get("/certificates/c-anna").status_code == 200
    for stays in ("c-late", "c-sent-later", "c-other"):
        assert not read_for_care(soap, stays).is_fault, stays


def test_an_export_that_is_tampered_with_is_refused_by_verify_and_by_erase(
    app: tuple[SoapClient, TestClient], db: Engine, operator: Operator, tmp_path: Path
) -> None:
    soap, _ = app
    register(soap, "c-1", ANNA)
    register(soap, "c-2", BERTIL)
    out = tmp_path / "export"
    assert operator.export(out).returncode == 0
    document = out / "certificates/000002/document.xml"
    document.write_bytes(document.read_bytes().replace(b"Olivia", b"Olivio"))

    verified = operator.run("verify-export", str(out), receiver=True)
    erased = operator.erase("--export", str(out), "--yes")
    elsewhere = operator.erase("--export", str(tmp_path / "nothing-here"), "--yes")

    assert verified.returncode == 1
    assert one_line(verified) == (
        "export NOT intact: certificates/000002/document.xml: its SHA-256 does not match the manifest"
    )
    assert erased.returncode == 2
    assert one_line(erased) == (
        f"refusing to erase: the export in {out} is NOT intact: "
        "certificates/000002/document.xml: its SHA-256 does not match the manifest"
    )
    assert elsewhere.returncode == 2 and "NOT intact" in one_line(elsewhere)
    assert not gone(db, "c-1") and not gone(db, "c-2")


def test_an_export_of_another_care_giver_erases_nothing(
    app: tuple[SoapClient, TestClient], db: Engine, operator: Operator, tmp_path: Path
) -> None:
    soap, _ = app
    register(soap, "c-other", BERTIL, care_giver="SE2321000016-OTHER")
    register(soap, "c-1", ANNA)
    assert operator.export(tmp_path / "other", giver="SE2321000016-OTHER").returncode == 0

    erased = operator.erase("--export", str(tmp_path / "other"), "--yes")

    assert erased.returncode == 2
    assert one_line(erased).endswith("is of another care giver (SE2321000016-OTHER)")
    assert not gone(db, "c-1")


def test_erasing_without_an_export_on_the_operators_word_removes_every_copy(
    app: tuple[SoapClient, TestClient], db: Engine, operator: Operator
) -> None:
    soap, _ = app
    register(soap, "c-1", ANNA)

    erased = operator.erase("--without-export", "--yes")

    assert erased.returncode == 0, erased.stderr
    assert erased.stdout == (
        f"removed 1 care copies of {GIVER}: 0 kept for citizens with consent, 1 deleted permanently\n"
    )
    assert gone(db, "c-1")


def test_an_export_that_cannot_finish_says_why_and_leaves_no_manifest_nor_any_file(
    app: tuple[SoapClient, TestClient], db: Engine, operator: Operator, tmp_path: Path
) -> None:
    soap, _ = app
    register(soap, "a-1", ANNA)
    register(soap, "b-2", ANNA)
    register(soap, "z-other", BERTIL, care_giver="SE2321000016-OTHER")
    # b-2's ciphertext is another row's: the store refuses to read it, after a-1 was written.
    swap(db, documents, documents.c.ciphertext, documents.c.certificate_id, "b-2", "z-other")
    out = tmp_path / "export"

    stopped = operator.export(out)

    assert stopped.returncode == 2
    # The store logs what it met (service/store); the operator is told in one line.
    assert stopped.stderr == "export-care-giver stopped: a stored ciphertext failed its integrity check\n"
    assert "Traceback" not in stopped.stdout
    assert not out.exists()
    assert operator.run("verify-export", str(out), receiver=True).returncode == 1


def test_an_export_into_a_directory_that_is_not_empty_is_refused(operator: Operator, tmp_path: Path) -> None:
    out = tmp_path / "used"
    out.mkdir()
    (out / "earlier.txt").write_text("x")

    refused = operator.export(out)

    assert refused.returncode == 2
    assert one_line(refused) == f"refusing to export: {out} exists and is not an empty directory"
    assert [p.name for p in out.iterdir()] == ["earlier.txt"]

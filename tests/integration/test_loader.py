"""What the settings name is read once (``service/loader.py``), and the app is built from that: the
key ring, the permission table and client CA bundle, the recipients, the audit log's signing key, the
portal's keys and the business rules. What each file may hold is tested where its rules are: ``tests/unit/test_crypto.py``
(keys), ``tests/unit/test_caller_settings.py`` (the permission table); ``serve`` refusing what it
cannot load, in one line, in ``tests/integration/test_cli.py``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from fastapi.testclient import TestClient

from service import loader
from service.app import create_app
from service.config import Settings
from service.model import Party, Recipient
from service.store import migration
from tests.integration.rest import portal_settings
from tests.reference import BUSINESS_RULES, need_business_rules
from tests.tls import make_pki


def test_the_app_is_built_from_what_was_loaded_and_reads_none_of_those_files_again(tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    pki = make_pki(files)
    recipients = files / "recipients.json"
    recipients.write_text(
        json.dumps([{"id": "FKASSA", "name": "FK", "certificate_types": ["LISJP"]}]), "utf-8"
    )
    signing_key = files / "audit-signing-key.pem"
    signing_key.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    )
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'intyg.db'}"
    settings = portal_settings(
        database_url,
        files,
        tls_cert_file=pki.server_cert,
        tls_key_file=pki.server_key,
        tls_client_ca_file=pki.ca_file,
        permissions_file=pki.permissions_file,
        recipients_file=recipients,
        audit_signing_key_file=signing_key,
    )

    loaded = loader.load(settings)
    shutil.rmtree(files)  # the service's files gone: nothing may read them again
    migration.upgrade(database_url, keyring=loaded.keyring)

    with TestClient(create_app(settings, loaded)) as client:
        assert client.get("/readyz").status_code == 200
    assert set(loaded.recipients) == {Party.FKASSA.value}
    assert loaded.permissions is not None and loaded.client_certificates is not None


@pytest.mark.parametrize(
    ("types", "reason"),
    [
        (["LISJP", "NONSENSE"], "FKASSA is given 'NONSENSE', which is not a type of the type table"),
        (["LISJP", "TSTRK1007"], "FKASSA is given TSTRK1007, which the type table sends to TRANSP only"),
    ],
)
def test_a_recipients_file_that_disagrees_with_the_type_table_is_refused_in_one_line(
    tmp_path: Path, types: list[str], reason: str
) -> None:
    # A send needs the recipient's entry and the type table to agree (rules.takes); an entry that
    # cannot is the operator's mistake, told at start rather than at a citizen's send.
    recipients = tmp_path / "recipients.json"
    recipients.write_text(
        json.dumps(
            [
                {"id": "TRANSP", "name": "TS", "certificate_types": ["TSTRK1007"]},
                {"id": "FKASSA", "name": "FK", "certificate_types": types},
            ]
        ),
        "utf-8",
    )

    with pytest.raises(loader.Unusable) as refused:
        loader.recipients(Settings(recipients_file=recipients))

    assert str(refused.value) == f"{loader.RECIPIENTS}: {reason}"
    assert "\n" not in str(refused.value)


def test_a_recipients_file_that_agrees_with_the_type_table_is_the_recipient_registry(tmp_path: Path) -> None:
    recipients = tmp_path / "recipients.json"
    recipients.write_text(
        json.dumps([{"id": "SKV", "name": "Skatteverket", "certificate_types": ["DB"]}]), "utf-8"
    )

    loaded = loader.recipients(Settings(recipients_file=recipients))

    assert loaded == {"SKV": Recipient(Party.SKV, "Skatteverket", frozenset({"DB"}))}


def test_an_empty_rule_directory_stops_the_load_in_one_line_naming_what_it_lacks(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    settings = portal_settings(
        f"sqlite+aiosqlite:///{tmp_path / 'intyg.db'}", tmp_path, business_rules_dir=rules
    )

    with pytest.raises(loader.Unusable) as refused:
        loader.load(settings)

    assert str(refused.value).startswith(
        f"{loader.BUSINESS_RULES}: {rules} lacks af00213.v1.sch, af00251.v1.sch, ag114.v1.sch"
    )


def test_a_rule_file_that_is_no_schematron_stops_the_load_in_one_line_naming_it(tmp_path: Path) -> None:
    need_business_rules()
    rules = tmp_path / "rules"
    shutil.copytree(BUSINESS_RULES, rules)
    (rules / "lisjp.v1.sch").write_bytes(b"<report/>")
    settings = portal_settings(
        f"sqlite+aiosqlite:///{tmp_path / 'intyg.db'}", tmp_path, business_rules_dir=rules
    )

    with pytest.raises(loader.Unusable) as refused:
        loader.load(settings)

    assert str(refused.value) == (
        f"{loader.BUSINESS_RULES}: lisjp.v1.sch: the root is not an ISO Schematron schema"
    )

"""The settings that identify SOAP callers (``service/config.py``; README "Callers"): the TLS files, the
permission table and the trusted proxies come in combinations that identify callers, the table is
validated strictly, and only loopback may be served without them. ``serve`` acting on this is tested
in ``tests/integration/test_cli.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from service import loader
from service.access import DEVELOPMENT_CONSUMER
from service.config import Settings, is_loopback
from service.model import Party

SQLITE = "sqlite+aiosqlite:///intyg.db"


def settings(**values: Any) -> Settings:
    return Settings(database_url=SQLITE, **values)


def table_file(tmp_path: Path, consumers: list[dict[str, Any]]) -> Path:
    path = tmp_path / "permissions.json"
    path.write_text(json.dumps({"consumers": consumers}), encoding="utf-8")
    return path


def entry(**changes: Any) -> dict[str, Any]:
    return {
        "hsa_id": "SE5565594230-B8N",
        "name": "Webcert",
        "operations": ["RegisterCertificate", "GetCertificate:2"],
        "care_givers": ["SE2321000016-39KJ"],
        "logical_addresses": ["*"],
    } | changes


TLS = {"tls_cert_file": "server.pem", "tls_key_file": "server.key"}
IDENTITY = {"tls_client_ca_file": "ca.pem", "permissions_file": "permissions.json"}


# --- Which combinations identify callers ------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        {},
        TLS | IDENTITY,
        IDENTITY | {"trusted_proxies": "10.0.0.5"},
        TLS | IDENTITY | {"trusted_proxies": "10.0.0.0/8"},
    ],
    ids=["development", "mutual TLS", "behind a trusted proxy", "both"],
)
def test_the_caller_settings_that_fit_together(values: dict[str, Any]) -> None:
    assert settings(**values).identifies_callers is bool(values)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"tls_cert_file": "server.pem"} | IDENTITY, "go together"),
        ({"tls_client_ca_file": "ca.pem"} | TLS, "go together"),
        ({"permissions_file": "permissions.json"} | TLS, "go together"),
        (TLS, "needs INTYG_TLS_CLIENT_CA_FILE"),
        ({"trusted_proxies": "10.0.0.5"}, "needs INTYG_TLS_CLIENT_CA_FILE"),
        (IDENTITY, "INTYG_TLS_CERT_FILE"),
        (IDENTITY | {"trusted_proxies": "10.0.0.1/8"}, "host bits"),
        (IDENTITY | {"trusted_proxies": "proxy.example"}, "does not appear to be"),
        (IDENTITY | TLS | {"client_cert_header": "ssl client cert"}, "client_cert_header"),
    ],
    ids=[
        "cert without key",
        "CA without table",
        "table without CA",
        "server TLS without client CA",
        "proxies without CA",
        "CA and table but no way in",
        "a network with host bits",
        "a name for a proxy",
        "a header name with spaces",
    ],
)
def test_settings_that_cannot_identify_callers_are_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        settings(**values)


@pytest.mark.parametrize(
    ("raw", "networks"),
    [
        ("10.0.0.5", ["10.0.0.5/32"]),
        ("10.0.0.0/8, 192.168.1.1", ["10.0.0.0/8", "192.168.1.1/32"]),
        ('["fd00::/8", "127.0.0.1"]', ["fd00::/8", "127.0.0.1/32"]),
    ],
)
def test_trusted_proxies_are_addresses_or_networks_as_operators_write_them(
    raw: str, networks: list[str]
) -> None:
    configured = settings(**IDENTITY, trusted_proxies=raw)

    assert [str(n) for n in configured.trusted_proxies] == networks


def test_trusted_proxies_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTYG_TRUSTED_PROXIES", "10.1.0.0/16,10.2.0.7")
    monkeypatch.setenv("INTYG_TLS_CLIENT_CA_FILE", "ca.pem")
    monkeypatch.setenv("INTYG_PERMISSIONS_FILE", "permissions.json")

    assert [str(n) for n in Settings(database_url=SQLITE).trusted_proxies] == ["10.1.0.0/16", "10.2.0.7/32"]


# --- The permission table ----------------------------------------------------------------------------------


def test_the_permission_table_is_read_into_consumers(tmp_path: Path) -> None:
    path = table_file(
        tmp_path, [entry(), entry(hsa_id="SE1", name="Portal", operations=["*"], care_givers=["*"])]
    )

    table = loader.permissions(settings(**TLS, tls_client_ca_file="ca.pem", permissions_file=path))

    assert table is not None
    webcert, portal = table.consumers["SE5565594230-B8N"], table.consumers["SE1"]
    assert webcert.operations == frozenset({"RegisterCertificate", "GetCertificate:2"})
    assert webcert.care_givers == frozenset({"SE2321000016-39KJ"})
    assert webcert.logical_addresses is None  # "*": every address
    assert (portal.operations, portal.care_givers) == (None, None)


def test_only_a_system_allowed_every_care_giver_may_be_granted_the_contracts_acting_for_a_citizen(
    tmp_path: Path,
) -> None:
    # Consent, the citizen's lists and reads reach every care giver (withdrawal deletes, rule 6).
    citizen_contracts = [
        "SetConsent",
        "GetConsent",
        "ListCertificatesForCitizen",
        "GetCertificate",
        "ListCertificates",
    ]
    consumers = [
        entry(operations=["GetCertificate:2", "SetCertificateStatus"]),
        entry(hsa_id="SE1", name="Portal", operations=citizen_contracts, care_givers=["*"]),
    ]

    table = loader.permissions(
        settings(**TLS, tls_client_ca_file="ca.pem", permissions_file=table_file(tmp_path, consumers))
    )

    assert table is not None
    assert table.consumers["SE1"].operations == frozenset(citizen_contracts)


def test_a_recipients_system_is_read_with_its_recipient_code_and_acts_as_that_part_alone(
    tmp_path: Path,
) -> None:
    recipient = entry(
        hsa_id="SE2021005521-FKSS", name="Försäkringskassan", care_givers=["*"], recipient="FKASSA"
    )
    path = table_file(tmp_path, [entry(), recipient])

    table = loader.permissions(settings(**TLS, tls_client_ca_file="ca.pem", permissions_file=path))

    assert table is not None
    fkassa, webcert = table.consumers["SE2021005521-FKSS"], table.consumers["SE5565594230-B8N"]
    assert (fkassa.recipient, fkassa.recipient_scope) == (Party.FKASSA, frozenset({Party.FKASSA}))
    assert (webcert.recipient, webcert.recipient_scope) == (None, frozenset())
    assert DEVELOPMENT_CONSUMER.recipient_scope is None


def test_without_a_table_there_is_none() -> None:
    assert loader.permissions(settings()) is None


@pytest.mark.parametrize(
    ("consumers", "message"),
    [
        ([entry(operations=["RegisterCertificat"])], "RegisterCertificat"),
        ([entry(operations=["GetCertificate:9"])], "GetCertificate:9"),
        ([entry(operations=["*", "RegisterCertificate"])], "stands alone"),
        ([entry(care_givers=[])], "at least 1"),
        ([entry(logical_addresses=[" "])], "blank"),
        ([entry(role="admin")], "Extra inputs"),
        ([{k: v for k, v in entry().items() if k != "care_givers"}], "care_givers"),
        ([entry(), entry()], "twice"),
        ([entry(operations=["RegisterCertificate", "SetConsent"])], "granted SetConsent:1"),
        ([entry(operations=["*"])], "ListCertificatesForCitizen:4, SetConsent:1, GetConsent:1"),
        ([entry(operations=["GetCertificate"])], "granted GetCertificate:1, which act for a citizen"),
        ([entry(operations=["ListCertificates:1"], care_givers=["SE1", "SE2"])], "ListCertificates:1"),
        ([entry(recipient="HSVARD")], "not a recipient's part code"),
        ([entry(recipient="FK")], "recipient"),
    ],
    ids=[
        "unknown operation",
        "unknown version",
        "star with others",
        "no care givers",
        "blank address",
        "unknown field",
        "care givers left out",
        "a system twice",
        "a scoped system granted SetConsent",
        "a scoped system granted every operation",
        "a scoped system granted both GetCertificates",
        "a scoped system granted a 2013 citizen contract",
        "care's part as a recipient code",
        "an unknown recipient code",
    ],
)
def test_a_malformed_permission_table_is_refused_with_its_reason(
    tmp_path: Path, consumers: list[dict[str, Any]], message: str
) -> None:
    configured = settings(
        **TLS, tls_client_ca_file="ca.pem", permissions_file=table_file(tmp_path, consumers)
    )

    with pytest.raises(ValueError, match=message):
        loader.permissions(configured)


# --- Where the service may listen --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("intygstjanst.example", False),
    ],
)
def test_only_loopback_addresses_count_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_the_development_default_serves_loopback_only() -> None:
    assert settings().unfit_to_serve(host="127.0.0.1") == []
    [problem] = settings().unfit_to_serve(host="0.0.0.0")
    assert "0.0.0.0" in problem and "INTYG_TLS_CLIENT_CA_FILE" in problem


def test_the_metrics_have_a_port_of_their_own() -> None:
    # A network policy can admit Prometheus to it and no caller of the API.
    assert settings().metrics_port == 9464
    assert settings().unfit_to_serve(port=8080) == []
    [problem] = settings(metrics_port=8080).unfit_to_serve(port=8080)
    assert "INTYG_METRICS_PORT" in problem
    for port in (0, 65536):
        with pytest.raises(ValidationError):
            settings(metrics_port=port)


def test_identified_callers_may_be_served_beyond_loopback() -> None:
    assert settings(**TLS, **IDENTITY).unfit_to_serve(host="0.0.0.0") == []


def test_the_production_profile_needs_identified_callers_even_on_loopback() -> None:
    problems = settings(profile="production").unfit_to_serve(host="127.0.0.1")

    assert any("SOAP callers are not identified" in p for p in problems)
    assert not any(
        "SOAP callers" in p for p in settings(profile="production", **TLS, **IDENTITY).unfit_to_serve()
    )


# --- Settings are plain data ------------------------------------------------------------------------------


def imported_by(module: str) -> set[str]:
    """The modules of the service that importing ``module`` alone brings in."""
    code = f"import sys, {module}; print(' '.join(m for m in sys.modules if m.startswith('service')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


def test_the_settings_depend_on_neither_the_contracts_nor_the_keys_they_name() -> None:
    # Settings are validated values; the files they name are loaded by service/loader.py.
    assert not imported_by("service.config") & {"service.soap.contracts", "service.store.crypto"}
    assert "service.config" not in imported_by("service.store.audit_key")


def test_settings_do_not_read_the_files_they_name(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"

    configured = settings(
        **TLS, tls_client_ca_file=missing, permissions_file=missing, recipients_file=missing
    )

    assert configured.permissions_file == missing
    with pytest.raises(loader.Unusable, match=r"^the TLS or permission settings cannot be used: cannot read"):
        loader.permissions(configured)

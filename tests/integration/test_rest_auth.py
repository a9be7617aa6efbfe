"""Who the citizen REST API believes: only a token the configured portal signed, naming a valid citizen.

Every refusal is a 401 problem+json with ``WWW-Authenticate: Bearer``, the same for each way a token
can be wrong, so a caller learns nothing from the difference. The verifier is ``service/rest/auth.py``;
the tokens a test portal signs are made in ``tests/integration/rest.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx2 import Response
from joserfc.jwk import ECKey, KeySet
from prometheus_client import REGISTRY
from sqlalchemy import create_engine, select

from service import errors
from service.app import create_app
from service.config import Settings
from service.model import PersonId
from service.rest.auth import TokenVerifier, dev_token
from service.store.tables import audit_records
from tests.integration.rest import (
    ANNA,
    AUDIENCE,
    BERTIL,
    ISSUER,
    PREFIX,
    SAMORDNING,
    assert_problem,
    bearer,
    ec_key,
    hs256_with_public_key,
    portal_settings,
    rsa_key,
    stranger_key,
    tampered_token,
    token,
    unsigned_token,
    write_portal_keys,
)
from tests.keys import settings_keys

COMMAND = Path(sys.executable).parent / "intygstjanst"


pytestmark = pytest.mark.one_engine("authentication happens before the store is reached")


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return portal_settings(database_url, tmp_path)


@contextmanager
def app_with(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def consent_with(client: TestClient, headers: dict[str, str]) -> Response:
    return client.get(f"{PREFIX}/consent", headers=headers)


def assert_unauthenticated(response: Response) -> None:
    assert_problem(response, 401, "unauthenticated")
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")


# --- accepted ----------------------------------------------------------------------------------------


def test_a_token_the_portal_signed_with_es256_names_the_citizen(client: TestClient) -> None:
    response = consent_with(client, bearer(token(ANNA)))
    assert response.status_code == 200, response.text
    assert response.json() == {"given": False, "changed_at": None}


def test_a_token_the_portal_signed_with_rs256_from_its_jwks_is_accepted(client: TestClient) -> None:
    assert consent_with(client, bearer(token(ANNA, key=rsa_key()))).status_code == 200


def test_a_samordningsnummer_is_a_citizen_too(client: TestClient) -> None:
    assert consent_with(client, bearer(token(SAMORDNING))).status_code == 200


def test_a_token_expired_within_the_leeway_is_still_accepted(client: TestClient) -> None:
    now = time.time()
    assert consent_with(client, bearer(token(ANNA, now=now - 400, exp=int(now) - 10))).status_code == 200


def test_a_token_whose_signature_was_verified_before_is_refused_once_it_expires() -> None:
    # The signature is checked once per token (auth.VERIFIED_TOKENS), its claims at every use.
    verifier = TokenVerifier(
        KeySet([ECKey.import_key(ec_key().as_dict(private=False))]),
        issuer=ISSUER,
        audience=AUDIENCE,
        leeway=0,
    )
    expires = int(time.time()) + 1
    presented = f"Bearer {token(ANNA, exp=expires)}"
    assert verifier.citizen(presented) == PersonId.parse(ANNA)
    assert verifier.citizen(presented) == PersonId.parse(ANNA)

    time.sleep(max(0.0, expires + 1 - time.time()))

    with pytest.raises(errors.Unauthenticated):
        verifier.citizen(presented)


def test_an_ec_public_key_in_a_pem_file_verifies_es256(database_url: str, tmp_path: Path) -> None:
    files = write_portal_keys(tmp_path / "pem")
    settings = portal_settings(
        database_url, tmp_path, portal_jwks_file=None, portal_public_key_file=files.ec_pem
    )
    with app_with(settings) as client:
        assert consent_with(client, bearer(token(ANNA))).status_code == 200
        assert_unauthenticated(consent_with(client, bearer(token(ANNA, key=rsa_key()))))


def test_an_rsa_public_key_in_a_pkcs1_pem_file_verifies_rs256(database_url: str, tmp_path: Path) -> None:
    files = write_portal_keys(tmp_path / "pem")
    settings = portal_settings(
        database_url, tmp_path, portal_jwks_file=None, portal_public_key_file=files.rsa_pkcs1_pem
    )
    with app_with(settings) as client:
        assert consent_with(client, bearer(token(ANNA, key=rsa_key()))).status_code == 200
        assert_unauthenticated(consent_with(client, bearer(token(ANNA))))


def test_an_rsa_public_key_in_the_usual_pem_form_verifies_rs256(database_url: str, tmp_path: Path) -> None:
    files = write_portal_keys(tmp_path / "pem")
    settings = portal_settings(
        database_url, tmp_path, portal_jwks_file=None, portal_public_key_file=files.rsa_spki_pem
    )
    with app_with(settings) as client:
        assert consent_with(client, bearer(token(ANNA, key=rsa_key()))).status_code == 200


# --- refused -----------------------------------------------------------------------------------------


def _forged_with_the_portals_kid() -> str:
    # Another key, but claiming the portal key's id: only the signature can tell them apart.
    return token(ANNA, key=stranger_key(), kid=ec_key().kid)


REFUSED: dict[str, Any] = {
    "no header": lambda: {},
    "empty bearer": lambda: {"Authorization": "Bearer "},
    "no scheme": lambda: {"Authorization": token(ANNA)},
    "basic scheme": lambda: {"Authorization": "Basic YW5uYTpzZWNyZXQ="},
    "not a jwt": lambda: bearer("not.a.token"),
    "garbage": lambda: bearer("x" * 500),
    "signed by another key": lambda: bearer(token(ANNA, key=stranger_key())),
    "another key with the portal kid": lambda: bearer(_forged_with_the_portals_kid()),
    "tampered claims": lambda: bearer(tampered_token(ANNA, BERTIL)),
    "expired": lambda: bearer(token(ANNA, now=time.time() - 1000, exp=int(time.time()) - 120)),
    "not yet valid": lambda: bearer(token(ANNA, nbf=int(time.time()) + 120)),
    "no exp": lambda: bearer(token(ANNA, exp=None)),
    "wrong issuer": lambda: bearer(token(ANNA, iss="https://evil.test")),
    "no issuer": lambda: bearer(token(ANNA, iss=None)),
    "wrong audience": lambda: bearer(token(ANNA, aud="someone-else")),
    "no audience": lambda: bearer(token(ANNA, aud=None)),
    "no subject": lambda: bearer(token(ANNA, sub=None)),
    "subject with a bad check digit": lambda: bearer(token("191212121213")),
    "subject not a number": lambda: bearer(token("anna@example.se")),
    "subject not a string": lambda: bearer(token(ANNA, sub=191212121212)),
    "alg none": lambda: bearer(unsigned_token(ANNA)),
    "hs256 keyed with the ec public key": lambda: bearer(
        hs256_with_public_key(ANNA, ec_key().as_pem(private=False), ec_key().kid)
    ),
    "hs256 keyed with the rsa public key": lambda: bearer(
        hs256_with_public_key(ANNA, rsa_key().as_pem(private=False), rsa_key().kid)
    ),
    "hs256 without kid": lambda: bearer(hs256_with_public_key(ANNA, ec_key().as_pem(private=False))),
}


@pytest.mark.parametrize("make_headers", REFUSED.values(), ids=list(REFUSED))
def test_anything_but_a_valid_portal_token_is_refused_with_401(client: TestClient, make_headers: Any) -> None:
    assert_unauthenticated(consent_with(client, make_headers()))


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/certificates", None),
        ("GET", "/certificates/c-1", None),
        ("GET", "/certificates/c-1/document", None),
        ("POST", "/certificates/c-1/archive", None),
        ("POST", "/certificates/c-1/restore", None),
        ("POST", "/certificates/c-1/send", {"recipient": "FKASSA"}),
        ("GET", "/consent", None),
        ("PUT", "/consent", {"given": True}),
        ("GET", "/access-log", None),
    ],
)
def test_every_endpoint_refuses_a_request_without_a_token(
    client: TestClient, method: str, path: str, body: Any
) -> None:
    assert_unauthenticated(client.request(method, PREFIX + path, json=body))
    expired = bearer(token(ANNA, now=time.time() - 1000, exp=int(time.time()) - 120))
    assert_unauthenticated(client.request(method, PREFIX + path, json=body, headers=expired))


def test_refused_tokens_are_audited_as_unidentified_within_a_budget_and_counted_past_it(
    database_url: str, tmp_path: Path
) -> None:
    # README "Input": audited as SOAP's refusals are, but a flood cannot grow the audit trail without bound.
    settings = portal_settings(
        database_url, tmp_path, audit_unidentified_burst=2, audit_unidentified_per_second=0.001
    )
    before = REGISTRY.get_sample_value("intyg_refusals_not_audited_total") or 0.0

    with app_with(settings) as client:
        for _ in range(5):
            assert_unauthenticated(consent_with(client, bearer(unsigned_token(ANNA))))

    engine = create_engine(database_url.replace("sqlite+aiosqlite", "sqlite"))
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(
                    audit_records.c.action,
                    audit_records.c.called,
                    audit_records.c.outcome,
                    audit_records.c.actor_id,
                )
            ).all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in rows] == [("call", "GET /api/citizen/v1/consent", "denied", "unidentified")] * 2
    assert (REGISTRY.get_sample_value("intyg_refusals_not_audited_total") or 0.0) - before == 3


def test_refusals_are_identical_whatever_was_wrong(client: TestClient) -> None:
    bodies = {name: consent_with(client, make()).json() for name, make in REFUSED.items()}
    assert len({str(b) for b in bodies.values()}) == 1, bodies


# --- the development key -----------------------------------------------------------------------------


def _without_portal_key(database_url: str, dev_key_file: Path) -> Settings:
    return Settings(
        database_url=database_url,
        dev_key_file=dev_key_file,
        dev_audit_key_file=dev_key_file.with_name("dev-audit-key.pem"),
        portal_issuer=ISSUER,
        portal_audience=AUDIENCE,
        **settings_keys(),
    )


def test_without_a_portal_key_the_development_key_is_accepted(database_url: str, tmp_path: Path) -> None:
    settings = _without_portal_key(database_url, tmp_path / "dev-key.json")
    assert not settings.portal_key_configured
    with app_with(settings) as client:
        assert consent_with(client, bearer(dev_token(settings, PersonId.parse(ANNA)))).status_code == 200
        # ...and only it: a token of the test portal is not.
        assert_unauthenticated(consent_with(client, bearer(token(ANNA))))


def test_with_a_portal_key_configured_the_development_key_is_refused(
    settings: Settings, database_url: str, tmp_path: Path
) -> None:
    # The same development key file the configured service would find in its working directory.
    without_key = _without_portal_key(database_url, settings.dev_key_file)
    minted = dev_token(without_key, PersonId.parse(ANNA))
    assert settings.dev_key_file.exists()
    with app_with(settings) as client:
        assert_unauthenticated(consent_with(client, bearer(minted)))


def _clean_environment(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("INTYG_")}
    env.update(extra)
    return env


def test_the_dev_token_command_prints_a_token_the_service_without_a_portal_key_accepts(
    database_url: str, tmp_path: Path
) -> None:
    done = subprocess.run(
        [str(COMMAND), "dev-token", ANNA],
        cwd=tmp_path,
        env=_clean_environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    key_file = tmp_path / "intygstjanst-dev-portal-key.json"
    assert key_file.exists()
    assert key_file.stat().st_mode & 0o077 == 0, "the development key is readable by its owner only"
    settings = Settings(
        database_url=database_url,
        dev_key_file=key_file,
        dev_audit_key_file=tmp_path / "dev-audit-key.pem",
        **settings_keys(),
    )
    with app_with(settings) as client:
        assert consent_with(client, bearer(done.stdout.strip())).status_code == 200


def test_the_dev_token_command_refuses_where_a_portal_key_is_configured(tmp_path: Path) -> None:
    files = write_portal_keys(tmp_path / "keys")
    done = subprocess.run(
        [str(COMMAND), "dev-token", ANNA],
        cwd=tmp_path,
        env=_clean_environment(INTYG_PORTAL_JWKS_FILE=str(files.jwks)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert not (tmp_path / "intygstjanst-dev-portal-key.json").exists()

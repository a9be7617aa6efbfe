"""Helpers for the citizen REST API tests: a test portal that signs bearer tokens, and a client per citizen.

The portal has an EC P-256 key (ES256) and an RSA key (RS256); ``Portal.write`` publishes their public
halves as a JWKS file and as PEM files, the way an operator configures the service
(``Settings.portal_jwks_file`` / ``portal_public_key_file``). Tokens are minted with joserfc, the library
the service verifies with; the tokens a forger would write (``alg: none``, HS256 keyed with the public
key) are written by hand, since a JOSE library rightly refuses to.

Used by test_rest_api.py, test_rest_auth.py, test_rest_schemathesis.py, test_access_log.py and
test_legacy_citizen_soap.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from fastapi.testclient import TestClient
from httpx2 import Response
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from service.config import Settings
from tests.integration import soap as s
from tests.integration.soap import SoapClient
from tests.keys import settings_keys
from tests.reference import business_rules_settings, with_check_digit

PREFIX = "/api/citizen/v1"
ISSUER = "https://portal.test/1177"
AUDIENCE = "intygstjanst-test"
PROBLEM_JSON = "application/problem+json"

# Valid personnummer of citizens who never meet outside these tests.
ANNA = "191212121212"
BERTIL = "197705232382"
CECILIA = with_check_digit("19800101123")
SAMORDNING = with_check_digit("19121272121")  # the day raised by 60

# The operations of the citizen API, under its prefix (the issue lists nine).
OPERATIONS = [
    ("GET", "/certificates"),
    ("GET", "/certificates/{certificate_id}"),
    ("GET", "/certificates/{certificate_id}/document"),
    ("POST", "/certificates/{certificate_id}/archive"),
    ("POST", "/certificates/{certificate_id}/restore"),
    ("POST", "/certificates/{certificate_id}/send"),
    ("GET", "/consent"),
    ("PUT", "/consent"),
    ("GET", "/access-log"),
]


@cache
def ec_key() -> ECKey:
    return ECKey.generate_key("P-256", auto_kid=True, private=True)


@cache
def rsa_key() -> RSAKey:
    # Generated once per run: an RSA key takes a noticeable moment to make.
    return RSAKey.generate_key(2048, auto_kid=True, private=True)


@cache
def stranger_key() -> ECKey:
    """A key the portal never published (a forger's)."""
    return ECKey.generate_key("P-256", auto_kid=True, private=True)


@dataclass(frozen=True)
class PortalFiles:
    jwks: Path
    ec_pem: Path
    rsa_spki_pem: Path  # "BEGIN PUBLIC KEY", what `openssl rsa -pubout` writes
    rsa_pkcs1_pem: Path  # "BEGIN RSA PUBLIC KEY"


def write_portal_keys(folder: Path) -> PortalFiles:
    folder.mkdir(parents=True, exist_ok=True)
    files = PortalFiles(
        folder / "portal-jwks.json",
        folder / "portal-ec.pem",
        folder / "portal-rsa.pem",
        folder / "portal-rsa-pkcs1.pem",
    )
    jwks = {"keys": [ec_key().as_dict(private=False), rsa_key().as_dict(private=False)]}
    files.jwks.write_text(json.dumps(jwks), "utf-8")
    files.ec_pem.write_bytes(ec_key().as_pem(private=False))
    files.rsa_spki_pem.write_bytes(rsa_key().as_pem(private=False))
    rsa_public: Any = rsa_key().get_op_key("verify")
    files.rsa_pkcs1_pem.write_bytes(
        rsa_public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    )
    return files


def portal_settings(database_url: str, folder: Path, **overrides: Any) -> Settings:
    """Settings as an operator writes them: the portal's JWKS, issuer and audience; the development
    key file lives in the test's own folder, so a stray one in the working directory plays no part."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "portal_jwks_file": write_portal_keys(folder / "keys").jwks,
        "portal_issuer": ISSUER,
        "portal_audience": AUDIENCE,
        "dev_key_file": folder / "dev-portal-key.json",
        **settings_keys(),
        "dev_audit_key_file": folder / "dev-audit-key.pem",
        **business_rules_settings(),
        **overrides,
    }
    return Settings(**values)


def claims_for(citizen: str, *, now: float | None = None, **changes: Any) -> dict[str, Any]:
    """The claims the portal signs; a change of ``None`` leaves the claim out."""
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": citizen,
        "iat": issued,
        "nbf": issued,
        "exp": issued + 300,
        **changes,
    }
    return {name: value for name, value in claims.items() if value is not None}


def token(citizen: str, *, key: ECKey | RSAKey | None = None, kid: str | None = None, **changes: Any) -> str:
    """A token the portal signs (ES256 by default; RS256 with ``key=rsa_key()``)."""
    signer = key if key is not None else ec_key()
    alg = "RS256" if isinstance(signer, RSAKey) else "ES256"
    header = {"alg": alg, "typ": "JWT", "kid": kid if kid is not None else signer.kid}
    return jwt.encode(header, claims_for(citizen, **changes), signer)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _segment(value: dict[str, Any]) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def unsigned_token(citizen: str) -> str:
    """``alg: none``: claims anyone can write."""
    return f"{_segment({'alg': 'none', 'typ': 'JWT'})}.{_segment(claims_for(citizen))}."


def tampered_token(citizen: str, other: str) -> str:
    """A portal token for ``citizen`` with the claims swapped for ``other``'s, signature kept."""
    header, _, signature = token(citizen).split(".")
    return f"{header}.{_segment(claims_for(other))}.{signature}"


def hs256_with_public_key(citizen: str, public_pem: bytes, kid: str | None = None) -> str:
    """The algorithm-confusion forgery: HMAC keyed with the portal's public key."""
    header: dict[str, Any] = {"alg": "HS256", "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    signing_input = f"{_segment(header)}.{_segment(claims_for(citizen))}"
    signature = hmac.new(public_pem, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


class CitizenApi:
    """The REST API as one citizen's portal session calls it."""

    def __init__(self, client: TestClient, citizen: str, **token_changes: Any) -> None:
        self.client = client
        self.citizen = citizen
        self.headers = bearer(token(citizen, **token_changes))

    def get(self, path: str, **params: Any) -> Response:
        return self.client.get(PREFIX + path, params=params, headers=self.headers)

    def post(self, path: str, body: Any = None) -> Response:
        if body is None:
            return self.client.post(PREFIX + path, headers=self.headers)
        return self.client.post(PREFIX + path, json=body, headers=self.headers)

    def put(self, path: str, body: Any) -> Response:
        return self.client.put(PREFIX + path, json=body, headers=self.headers)

    def consent(self, given: bool = True) -> dict[str, Any]:
        response = self.put("/consent", {"given": given})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def listed(self, *, archived: bool = False) -> list[str]:
        response = self.get("/certificates", archived=str(archived).lower())
        assert response.status_code == 200, response.text
        return [c["id"] for c in response.json()["certificates"]]


def assert_problem(response: Response, status: int, code: str) -> dict[str, Any]:
    """An RFC 9457 problem with its stable code, and no personal identity number anywhere in it."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert body["status"] == status
    assert body["title"]
    for number in (ANNA, BERTIL, CECILIA, SAMORDNING):
        assert number not in response.text and number[2:] not in response.text
    return body


def register(soap: SoapClient, certificate_id: str, citizen: str, **kw: str) -> None:
    """A care system registers a certificate (RegisterCertificate 3, a peer-request envelope)."""
    reply = soap.post(s.path_of("RegisterCertificate", 3), s.register_envelope(certificate_id, citizen, **kw))
    assert reply.result()[0] == "OK", reply.result()


def revoke(soap: SoapClient, certificate_id: str, citizen: str) -> None:
    request = s.peer_request(
        "revokecertificate", **{"data.intygsId": certificate_id, "data.personId": citizen}
    )
    assert soap.post(s.path_of("RevokeCertificate", 2), request).result()[0] == "OK"


def remove_for_care(soap: SoapClient, certificate_id: str) -> None:
    assert soap.call("RemoveCertificateForCare", 1, s.remove_for_care(certificate_id)).result()[0] == "OK"

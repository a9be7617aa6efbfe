"""Bearer tokens -> the citizen. The portal has authenticated the citizen and signs a JWT naming them.

Signature (ES256 or RS256, by the portal's configured keys), ``iss``, ``aud``, ``exp``/``nbf`` with a
small leeway, and ``sub`` a valid personnummer or samordningsnummer: only then is the caller that
citizen. JOSE is joserfc's; nothing here is hand-written cryptography.

Without a configured portal key, a development key kept in the working directory is used, so that a
new user can mint a token with ``intygstjanst dev-token`` and try the API at once.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

from service import errors
from service.config import Settings
from service.model import PersonId

ALGORITHMS: Final = ["ES256", "RS256"]
DEV_TOKEN_LIFETIME: Final = 3600


def _load_dev_key(path: Path) -> ECKey:
    """The development signing key, created on first use (mode 0600)."""
    if path.exists():
        return ECKey.import_key(json.loads(path.read_text("utf-8")))
    key = ECKey.generate_key("P-256", auto_kid=True)
    path.touch(mode=0o600)
    path.write_text(json.dumps(key.as_dict(private=True)), "utf-8")
    return key


def _public_key(pem: bytes) -> ECKey | RSAKey:
    """An EC or RSA public key in any PEM form (SubjectPublicKeyInfo or PKCS#1)."""
    for kind in (ECKey, RSAKey):
        try:
            return kind.import_key(pem)
        except (JoseError, ValueError, TypeError):
            continue
    raise ValueError("the portal's public key file holds no EC or RSA public key")


def portal_keys(settings: Settings) -> KeySet:
    """The keys tokens are checked with: the portal's, or else only the development key."""
    if settings.portal_jwks_file is not None:
        return KeySet.import_key_set(json.loads(settings.portal_jwks_file.read_text("utf-8")))
    if settings.portal_public_key_file is not None:
        return KeySet([_public_key(settings.portal_public_key_file.read_bytes())])
    return KeySet([ECKey.import_key(_load_dev_key(settings.dev_key_file).as_dict(private=False))])


def dev_token(settings: Settings, citizen: PersonId, *, now: float | None = None) -> str:
    """A token for ``citizen`` signed by the development key (``intygstjanst dev-token``)."""
    key = _load_dev_key(settings.dev_key_file)
    issued = int(now if now is not None else time.time())
    claims = {
        "iss": settings.portal_issuer,
        "aud": settings.portal_audience,
        "sub": citizen.value,
        "iat": issued,
        "exp": issued + DEV_TOKEN_LIFETIME,
    }
    return jwt.encode({"alg": "ES256", "kid": key.kid}, claims, key)


# A portal session presents its token with every request; its signature is checked once per process
# while the token is among the last this many seen. Its claims (exp, nbf...) are checked on every use.
VERIFIED_TOKENS: Final = 4096


class TokenVerifier:
    def __init__(self, keys: KeySet, *, issuer: str, audience: str, leeway: int) -> None:
        self.keys = keys
        self._signed_claims = functools.lru_cache(maxsize=VERIFIED_TOKENS)(self._verify_signature)
        self.claims = jwt.JWTClaimsRegistry(
            leeway=leeway,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": audience},
            exp={"essential": True},
            sub={"essential": True},
        )

    def citizen(self, authorization: str | None) -> PersonId:
        """The citizen the bearer token names; ``Unauthenticated`` for anything less."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise errors.Unauthenticated("a bearer token is required")
        try:
            claims = self._signed_claims(token.strip())
            self.claims.validate(dict(claims))
        except (JoseError, ValueError, TypeError):
            raise errors.Unauthenticated("the token is not valid") from None
        subject = claims.get("sub")
        if not isinstance(subject, str):
            raise errors.Unauthenticated("the token names no citizen")
        try:
            return PersonId.parse(subject)
        except errors.InvalidPersonId:
            raise errors.Unauthenticated("the token names no valid citizen") from None

    def _verify_signature(self, token: str) -> MappingProxyType[str, Any]:
        """The claims of a token whose signature one of the keys verifies; raises otherwise (and a
        failure is never cached). Read-only, as the cache hands the same claims to every use."""
        return MappingProxyType(jwt.decode(token, self.keys, algorithms=ALGORITHMS).claims)

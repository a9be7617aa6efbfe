"""Headers every answer carries (README "Input").

The citizen API's answers hold a citizen's health data: no shared or browser cache keeps them
(``Cache-Control: no-store``). No browser guesses a type other than the one declared
(``X-Content-Type-Options: nosniff``). Where the service terminates TLS itself, browsers keep to HTTPS
for a year (``Strict-Transport-Security``); behind an ingress, the ingress that terminates TLS says so.
"""

from __future__ import annotations

from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_NOSNIFF: Final = (b"x-content-type-options", b"nosniff")
_NO_STORE: Final = (b"cache-control", b"no-store")
_HSTS: Final = (b"strict-transport-security", b"max-age=31536000")


class SecurityHeaders:
    def __init__(self, app: ASGIApp, *, private_prefix: str, https: bool) -> None:
        self.app = app
        self.private_prefix = private_prefix
        self.https = https

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        added = [_NOSNIFF]
        if scope["path"].startswith(self.private_prefix):
            added.append(_NO_STORE)
        if self.https:
            added.append(_HSTS)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *added]
            await send(message)

        await self.app(scope, receive, send_with_headers)

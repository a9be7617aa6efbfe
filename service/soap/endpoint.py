"""The SOAP endpoint: one POST route per contract path, and each contract's WSDL at ``?wsdl`` (and as its
file under /contracts), naming the public address.

A request goes: size limit -> hardened parse -> the body element names the contract (routing on the
body's qualified name, not on SOAPAction, as rivta/README.md advises) -> addressing header -> our XSD
-> the calling system (its client certificate) and its permissions -> handler. Every failure is
answered in the contract's own form; nothing of the request, no stack trace and no SQL reaches the
answer or the log. A call the permission table does not cover is audited as denied (README "Callers").
"""

from __future__ import annotations

import datetime as dt
import logging
import posixpath
import re
from collections.abc import Callable, Mapping
from typing import Any, cast

from fastapi import APIRouter, Request, Response
from lxml import etree
from starlette.types import ASGIApp, Receive, Scope, Send

from service import access, errors, operations
from service.audit import RefusalBudget
from service.business_rules import RuleSet
from service.connection import BodyTooSlow
from service.model import Caller, CallerKind, Channel, Recipient
from service.soap import faults
from service.soap import messages as m
from service.soap.caller import Callers
from service.soap.contracts import CONTRACTS, Call, Contract, ResultKind
from service.telemetry import log_unforeseen

log = logging.getLogger("service.soap")

CONTENT_TYPE = "text/xml; charset=utf-8"
_SCHEMA_LOCATION = re.compile(r'schemaLocation="(?!https?:)([^"]+)"')
_ADDRESS_LOCATION = re.compile(r'(<[\w]*:?address\s+location=")[^"]*(")')
# What a trusted proxy may say of the public address: a host (name, IPv4 or [IPv6]) with a port, and
# a path prefix; anything else is not used.
_HOST = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
_PREFIX = re.compile(r"(?:/[A-Za-z0-9._~-]+)*")
_DEFAULT_PORTS = frozenset({("http", 80), ("https", 443)})


def _xml(data: bytes, status: int = 200) -> Response:
    return Response(content=data, status_code=status, media_type=CONTENT_TYPE)


def _fault(code: str, message: str) -> Response:
    # SOAP 1.1 answers a Fault with HTTP 500, whatever the fault code.
    return _xml(m.fault(code, message), 500)


async def _read_limited(request: Request, limit: int) -> bytes | None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _served_wsdls(contract: Contract) -> dict[str, str]:
    """The contract's WSDL as served at its endpoint and at its file under /contracts, each importing its
    schemas relative to its own URL: a root-relative ``/contracts/...`` would leave the prefix an ingress
    adds (``https://host/intygstjanst/...``) and miss (README, "Behind an ingress")."""
    folder = f"/contracts/interactions/{contract.folder}"
    (file,) = (m.CONTRACTS / "interactions" / contract.folder).glob("*.wsdl")
    text = file.read_text(encoding="utf-8")

    def relative_to(path: str) -> str:
        def location(match: re.Match[str]) -> str:
            target = posixpath.join(folder, match.group(1))
            return f'schemaLocation="{posixpath.relpath(target, posixpath.dirname(path))}"'

        return _SCHEMA_LOCATION.sub(location, text)

    return {path: relative_to(path) for path in (contract.path, f"{folder}/{file.name}")}


class ContractPosts:
    """The contracts' POSTs, answered ahead of FastAPI's router by a look-up of the exact path: matching
    them among the app's routes cost more than the rest of a GetCertificate outside the store. Any other
    request (``?wsdl``, the REST API, a path with a trailing slash) goes on to the app."""

    def __init__(self, app: ASGIApp, *, endpoint: SoapEndpoint) -> None:
        self.app = app
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        contract = self.endpoint.by_path.get(scope["path"]) if scope["type"] == "http" else None
        if contract is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        response, outcome = await self.endpoint.handle(contract, Request(scope, receive))
        # Read by the telemetry middleware, which logs and counts every request.
        scope.setdefault("state", {})["soap_outcome"] = outcome
        await response(scope, receive, send)


class SoapEndpoint:
    def __init__(
        self,
        *,
        schema: etree.XMLSchema,
        unit_of_work: Callable[[], operations.UnitOfWork],
        clock: Callable[[], dt.datetime],
        max_request_bytes: int,
        recipients: Mapping[str, Recipient],
        business_rules: RuleSet | None,
        callers: Callers,
        unidentified: RefusalBudget,
        public_base_url: str | None = None,
    ) -> None:
        self.schema = schema
        self.public_base_url = public_base_url.rstrip("/") if public_base_url else None
        self.unidentified = unidentified
        self.callers = callers
        self.unit_of_work = unit_of_work
        self.clock = clock
        self.max_request_bytes = max_request_bytes
        self.recipients = recipients
        self.business_rules = business_rules
        self.by_request = {c.request: c for c in CONTRACTS}
        self.by_path = {c.path: c for c in CONTRACTS}
        # Each contract's WSDL by the path it is served at: its endpoint (``?wsdl``) and its file under
        # /contracts, where app.py serves the folder.
        self.wsdl = {path: (c, wsdl) for c in CONTRACTS for path, wsdl in _served_wsdls(c).items()}

    def router(self) -> APIRouter:
        """Each contract's WSDL, at ``?wsdl`` and as its file (ahead of the static /contracts, for its
        address); its POSTs are answered by ``ContractPosts``."""
        router = APIRouter()
        for path in self.wsdl:
            router.add_api_route(path, self._get(path), methods=["GET"], include_in_schema=False)
        return router

    def _get(self, path: str) -> Callable[[Request], Response]:
        contract, served = self.wsdl[path]
        at_endpoint = path == contract.path

        def wsdl(request: Request) -> Response:
            if at_endpoint and "wsdl" not in {key.lower() for key in request.query_params}:
                return _fault("Client", "POST a SOAP request, or GET ?wsdl for the contract")
            address = self._base_url(request.scope) + contract.path
            return _xml(_ADDRESS_LOCATION.sub(rf"\g<1>{address}\g<2>", served).encode())

        return wsdl

    def _base_url(self, scope: Scope) -> str:
        """Where callers reach the service: configured, or told by a trusted proxy, or the socket it listens
        on. Never the request's Host header, which anyone may write (README, INTYG_PUBLIC_BASE_URL)."""
        if self.public_base_url is not None:
            return self.public_base_url
        if self.callers.from_trusted_proxy(scope):
            headers = {name: value.decode("latin-1") for name, value in scope.get("headers") or ()}
            proto = headers.get(b"x-forwarded-proto", "")
            host = headers.get(b"x-forwarded-host", "")
            prefix = headers.get(b"x-forwarded-prefix", "").rstrip("/")
            if proto in ("http", "https") and _HOST.fullmatch(host) and _PREFIX.fullmatch(prefix):
                return f"{proto}://{host}{prefix}"
        host, port = scope["server"]
        scheme = scope["scheme"]
        named = f"[{host}]" if ":" in host else host
        return f"{scheme}://{named}" if (scheme, port) in _DEFAULT_PORTS else f"{scheme}://{named}:{port}"

    def operations(self) -> dict[str, str]:
        """Each contract path and the operation name telemetry gives its requests."""
        return {path: f"{c.operation}:{c.major}" for path, c in self.by_path.items()}

    async def handle(self, contract: Contract, request: Request) -> tuple[Response, str]:
        try:
            data = await _read_limited(request, self.max_request_bytes)
        except BodyTooSlow:
            fault = _fault("Client", "The message did not arrive in time")
            # The rest of the body may still be on its way, where a next request would be read.
            fault.headers["Connection"] = "close"
            return fault, "fault"
        if data is None:
            return _fault("Client", "The message is larger than this service accepts"), "fault"
        try:
            envelope = m.parse_envelope(data)
        except m.MalformedMessage as exc:
            return _fault("Client", str(exc)), "fault"
        if self.by_request.get(envelope.body.tag) is not contract:
            return _fault(
                "Client", "The body does not hold a request of the contract at this address"
            ), "fault"
        address = m.logical_address(envelope.header, bp20=contract.domain.bp20)
        if address is None:
            header = "wsa:To" if contract.domain.bp20 else "LogicalAddress"
            return _fault("Client", f"The {header} header is missing"), "fault"
        try:
            # Who calls, before the request is validated or acted on: a system that may not make this
            # call learns nothing from the answer about its request.
            consumer = await self._permitted(contract, request, address)
            if (invalid := self._invalid(contract, envelope.body)) is not None:
                return invalid
            call = Call(
                uow=self.unit_of_work(),
                now=self.clock(),
                consumer=consumer,
                recipients=self.recipients,
                business_rules=self.business_rules,
            )
            produced = await CONTRACTS[contract](call, envelope.body)
        except errors.ServiceError as exc:
            error = faults.soap_error(exc)
            # Counted and logged as the error it is answered as: a foreign id as an unknown one.
            outcome = "denied" if issubclass(errors.answered_as(type(exc)), errors.Denied) else None
            if contract.result is ResultKind.NONE:
                return _fault(error.fault_code, error.text), outcome or "fault"
            return self._result(contract, error.result), outcome or error.error_id.lower()
        except Exception as exc:
            log_unforeseen(log, "soap request failed", exc, operation=contract.operation)
            if contract.result is ResultKind.NONE:
                return _fault(faults.INTERNAL.fault_code, faults.INTERNAL.text), "fault"
            return self._result(contract, faults.INTERNAL.result), faults.INTERNAL.error_id.lower()
        if isinstance(produced, m.Result):
            return self._result(contract, produced), (produced.error_id or produced.code).lower()
        if isinstance(produced, bytes):
            return _xml(produced), "ok"
        return _xml(m.envelope(produced)), "ok"

    def _invalid(self, contract: Contract, body: etree._Element) -> tuple[Response, str] | None:
        if self.schema.validate(body):
            return None
        # The path of the first error names the element; its message could quote the value.
        # lxml-stubs lack the error log's entries; each has the XPath of the element at fault.
        entries: list[Any] = list(cast(Any, self.schema.error_log))
        where = entries[0].path if entries else ""
        text = f"The request does not follow the contract at {where}".strip()
        if contract.result is ResultKind.NONE:
            return _fault("Client", text), "fault"
        return self._result(contract, m.Result("ERROR", text, "VALIDATION_ERROR")), "validation_error"

    async def _permitted(self, contract: Contract, request: Request, address: str) -> access.Consumer:
        """The calling system, if its permissions cover this call; else the refusal is audited as
        denied and raised (and answered as the contract answers errors)."""
        system_id = access.UNIDENTIFIED
        try:
            system_id = self.callers.identify(request.scope)
            consumer = self.callers.consumer(system_id)
            access.require_call(
                consumer, operation=contract.operation, major=contract.major, logical_address=address
            )
            return consumer
        except errors.CallerNotPermitted as refusal:
            # Why, for operators (the answer does not say; the messages hold no personal data). The
            # system's HSA id is in the audit record, not in the log, whose lines never name an HSA id.
            log.warning("soap call refused: %s", refusal, extra={"operation": contract.operation})
            # The party a refused system acts for is read from the request only once it is permitted.
            caller = Caller(CallerKind.CARE_SYSTEM, Channel.SOAP, system_id)
            await operations.refuse_call(
                self.unit_of_work(),
                caller=caller,
                called=f"{contract.operation}:{contract.major}",
                now=self.clock(),
                error=refusal,
                budget=self.unidentified if system_id == access.UNIDENTIFIED else None,
            )

    @staticmethod
    def _result(contract: Contract, result: m.Result) -> Response:
        return _xml(m.envelope(contract.result_response(result)))

"""``BodyDeadline`` in process, with a fake client (``receive``): what bounds a request's body and what
it leaves alone. The real server, slow clients and both channels' answers: ``tests/integration/
test_slow_clients.py``."""

from __future__ import annotations

import asyncio

import pytest
from starlette.types import Message, Receive, Scope, Send

from service.connection import BodyDeadline, BodyTooSlow

DEADLINE = 0.2


class FakeClient:
    """Sends the messages given, each after its delay; then nothing (a client that stays)."""

    def __init__(self, *messages: tuple[float, Message]) -> None:
        self.messages = list(messages)

    async def receive(self) -> Message:
        if not self.messages:
            await asyncio.Event().wait()
        delay, message = self.messages.pop(0)
        await asyncio.sleep(delay)
        return message


async def _read_all(scope: Scope, receive: Receive, send: Send) -> None:
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)


async def _read_then_wait_for_the_client_to_go(scope: Scope, receive: Receive, send: Send) -> None:
    await _read_all(scope, receive, send)
    await receive()


async def _nothing(message: Message) -> None:
    pass


HTTP: Scope = {"type": "http"}


async def test_a_body_that_arrives_within_the_deadline_is_read_whole() -> None:
    client = FakeClient(
        (0.05, {"type": "http.request", "body": b"a", "more_body": True}),
        (0.05, {"type": "http.request", "body": b"b", "more_body": False}),
    )

    await BodyDeadline(_read_all, seconds=DEADLINE)(HTTP, client.receive, _nothing)


async def test_a_body_still_arriving_at_the_deadline_is_too_slow() -> None:
    client = FakeClient(
        *[(0.05, {"type": "http.request", "body": b"a", "more_body": True}) for _ in range(10)]
    )

    with pytest.raises(BodyTooSlow):
        await BodyDeadline(_read_all, seconds=DEADLINE)(HTTP, client.receive, _nothing)


async def test_waiting_for_the_client_to_go_after_the_whole_body_is_not_bounded() -> None:
    client = FakeClient((0, {"type": "http.request", "body": b"", "more_body": False}))
    app = BodyDeadline(_read_then_wait_for_the_client_to_go, seconds=DEADLINE)

    with pytest.raises(TimeoutError):  # the test's own bound, past the body's deadline: no BodyTooSlow
        async with asyncio.timeout(DEADLINE * 3):
            await app(HTTP, client.receive, _nothing)

"""The AMQP 0-9-1 adapter of the relay's ``Broker`` (``relay.py``), with aio-pika, for RabbitMQ (README.md,
"Recipients and statistics").

Topology, declared on every connection (idempotent: the same names with the same arguments):

- the exchange ``<exchange>`` (direct, durable): the relay publishes every event to it with its
  destination (a recipient's part code, or ``statistics``) as routing key;
- one durable quorum queue ``<exchange>.<destination>`` per destination, bound by its routing key, with a
  delivery limit and the dead-letter exchange: a consumer that rejects a message again and again
  dead-letters it rather than looping on it;
- the dead-letter exchange ``<exchange>.dead`` (fanout, durable) and its queue ``<exchange>.dead``, where
  the relay publishes the events it gave up on (``x-death-reason`` says why).

Every message is published persistent and mandatory on a channel with publisher confirms: ``publish``
returns once the broker has written it to its queue, ``Refused`` where the broker nacks it or cannot route
it (basic.return), ``BrokerUnavailable`` where the connection fails or the confirm does not come within
``timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractExchange, DeliveryMode, ExchangeType

from service.relay import BrokerUnavailable, Message, Refused
from service.store.outbox import Failure

# What the broker, the connection or the channel raise when they cannot serve: no message's fault.
_UNAVAILABLE = (
    OSError,
    TimeoutError,
    ConnectionError,
    aiormq.exceptions.AMQPError,
    aio_pika.exceptions.AMQPException,
    RuntimeError,  # aiormq's ChannelInvalidStateError: the channel closed under us
)


def queue_name(exchange: str, destination: str) -> str:
    return f"{exchange}.{destination}"


def dead_letter_name(exchange: str) -> str:
    return f"{exchange}.dead"


class AmqpPublisher:
    def __init__(self, exchange: AbstractExchange, dead: AbstractExchange, timeout: float) -> None:
        self._exchange = exchange
        self._dead = dead
        self._timeout = timeout

    async def publish(self, message: Message) -> None:
        await self._confirmed(self._exchange, message, message.destination, message.headers)

    async def dead_letter(self, message: Message, reason: Failure) -> None:
        await self._confirmed(self._dead, message, "", {**message.headers, "x-death-reason": reason.value})

    async def _confirmed(
        self, exchange: AbstractExchange, message: Message, routing_key: str, headers: dict[str, str]
    ) -> None:
        amqp = aio_pika.Message(
            message.body,
            message_id=message.message_id,
            type=message.kind.value,
            content_type=message.content_type,
            timestamp=message.timestamp,
            delivery_mode=DeliveryMode.PERSISTENT,
            headers=dict(headers),
            app_id="intygstjanst",
        )
        try:
            await asyncio.wait_for(exchange.publish(amqp, routing_key, mandatory=True), self._timeout)
        except aiormq.exceptions.PublishError:
            raise Refused(Failure.UNROUTABLE) from None
        except aiormq.exceptions.DeliveryError:
            raise Refused(Failure.NACKED) from None
        except _UNAVAILABLE as exc:
            raise BrokerUnavailable(_kind(exc)) from None


class AmqpBroker:
    """``url``: amqp:// or amqps://; ``destinations``: the recipients' part codes and ``statistics``;
    ``timeout``: seconds to connect, to declare, and for each confirm; ``delivery_limit``: deliveries of a
    message to consumers before the broker dead-letters it."""

    def __init__(
        self,
        url: str,
        *,
        exchange: str,
        destinations: Iterable[str],
        timeout: float,
        delivery_limit: int,
    ) -> None:
        self._url = url
        self._exchange = exchange
        self._destinations = tuple(destinations)
        self._timeout = timeout
        self._delivery_limit = delivery_limit

    @contextlib.asynccontextmanager
    async def connected(self) -> AsyncIterator[AmqpPublisher]:
        try:
            connection = await asyncio.wait_for(
                aio_pika.connect(self._url, timeout=self._timeout), self._timeout
            )
        except _UNAVAILABLE as exc:
            raise BrokerUnavailable(_kind(exc)) from None
        try:
            try:
                channel = await asyncio.wait_for(
                    connection.channel(publisher_confirms=True, on_return_raises=True), self._timeout
                )
                exchange, dead = await asyncio.wait_for(self._declare(channel), self._timeout)
            except _UNAVAILABLE as exc:
                raise BrokerUnavailable(_kind(exc)) from None
            yield AmqpPublisher(exchange, dead, self._timeout)
        finally:
            with contextlib.suppress(*_UNAVAILABLE):
                await asyncio.wait_for(connection.close(), self._timeout)

    async def _declare(self, channel: AbstractChannel) -> tuple[AbstractExchange, AbstractExchange]:
        dead_name = dead_letter_name(self._exchange)
        dead = await channel.declare_exchange(dead_name, ExchangeType.FANOUT, durable=True)
        dead_queue = await channel.declare_queue(
            dead_name, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await dead_queue.bind(dead, routing_key="")
        exchange = await channel.declare_exchange(self._exchange, ExchangeType.DIRECT, durable=True)
        for destination in self._destinations:
            queue = await channel.declare_queue(
                queue_name(self._exchange, destination),
                durable=True,
                arguments={
                    "x-queue-type": "quorum",
                    "x-delivery-limit": self._delivery_limit,
                    "x-dead-letter-exchange": dead_name,
                },
            )
            await queue.bind(exchange, routing_key=destination)
        return exchange, dead


def _kind(exc: BaseException) -> str:
    # The kind only: a broker's message may quote the URL, and so its password.
    return type(exc).__name__

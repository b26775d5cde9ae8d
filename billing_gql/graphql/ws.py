"""GraphQL over WebSocket at ``GET /graphql``: the ``graphql-transport-ws`` protocol.

https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md — a small protocol, implemented
here on graphql-core's ``subscribe``/``execute`` with the same document cache (and so the same
depth, alias and token limits) as the HTTP route:

- the client offers the ``graphql-transport-ws`` subprotocol (else the upgrade is refused);
- ``connection_init`` within ``GraphQLSettings.ws_init_timeout`` seconds (default 10,
  ``BILLING_GQL_WS_INIT_TIMEOUT_SECONDS``; else close 4408), once (else 4429); its payload may
  carry ``{"authorization": "Bearer …"}`` — an admin key or a customer session token. A missing
  or bad token still gets ``connection_ack``: auth is per operation, so the operation gets an
  ``error`` whose ``extensions.code`` is UNAUTHENTICATED or FORBIDDEN, as on HTTP;
- a customer session token holds only until it expires or is revoked
  (``revokeCustomerSessions``, from any server process: notified on ``billing_gql_session``):
  then every running operation (a ``checkoutUpdated`` stream) ends with an ``error`` whose
  code is UNAUTHENTICATED, and the socket closes with 4401 (reconnect with a fresh token);
- after ``connection_init``, a socket with no operation of an admin or customer token running
  for ``GraphQLSettings.ws_idle_timeout`` seconds (default 60,
  ``BILLING_GQL_WS_IDLE_TIMEOUT_SECONDS``) closes with 1000 — an anonymous socket holds
  nothing open for long;
- one process holds at most ``ws_max_per_address`` sockets per client address and
  ``ws_max_per_token`` per token (``BILLING_GQL_WS_MAX_PER_ADDRESS``, default 100, and
  ``BILLING_GQL_WS_MAX_PER_TOKEN``, default 10; 0 for no cap): one more closes with 1013;
- ``billing-gql serve`` has uvicorn refuse messages over the body limit itself (close 1009),
  before reading them whole;
- ``subscribe`` before the ack closes 4401; a duplicate id closes 4409; a malformed message
  closes 4400; ``ping`` → ``pong``; ``complete`` from the client stops that operation;
- each result is a ``next``; the end of the stream a ``complete``; errors before the stream
  starts (validation, auth) an ``error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import datetime
from inspect import isawaitable
from typing import Any

from graphql import ExecutionResult, OperationType, get_operation_ast, subscribe
from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect
from litestar.handlers import WebsocketRouteHandler

from billing_gql.access.keys import key_for_secret
from billing_gql.clock import wall_now
from billing_gql.context import ServiceContext
from billing_gql.customers.service import hash_token, session_for_token
from billing_gql.events.notify import SESSION_CHANNEL, checkout_listener
from billing_gql.graphql.auth import bearer_token
from billing_gql.graphql.context import Context, Viewer
from billing_gql.graphql.errors import GraphQLErrorCode
from billing_gql.graphql.http import (
    DocumentCache,
    format_error,
    loads_json,
    request_problem,
    result_body,
)
from billing_gql.graphql.inputs import variables_problem
from billing_gql.graphql.principals import resolve_viewer
from billing_gql.settings import GraphQLSettings

log = logging.getLogger(__name__)

PROTOCOL = "graphql-transport-ws"
MAX_OPERATIONS = 100
"""Concurrent operations one connection may run."""


class _Close(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


TOO_MANY = 1013
"""Close code of a socket over a connection cap (RFC 6455 "Try Again Later")."""


class _Counts:
    """Open sockets per key (client address, token hash) in this process, within a cap."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.open: dict[str, int] = {}

    def take(self, key: str) -> bool:
        """Count one more socket under ``key``; ``False`` (nothing counted) when at the cap."""
        count = self.open.get(key, 0)
        if self.cap and count >= self.cap:
            return False
        self.open[key] = count + 1
        return True

    def release(self, key: str) -> None:
        count = self.open.get(key, 0) - 1
        if count > 0:
            self.open[key] = count
        else:
            self.open.pop(key, None)


class _Connection:
    """One WebSocket connection speaking graphql-transport-ws."""

    def __init__(
        self,
        socket: WebSocket[Any, Any, Any],
        cache: DocumentCache,
        settings: GraphQLSettings,
        tokens: _Counts,
    ) -> None:
        self.socket = socket
        self.cache = cache
        self.max_message = settings.max_body_bytes
        self.init_timeout = settings.ws_init_timeout
        self.idle_timeout = settings.ws_idle_timeout
        self.tokens = tokens
        self.token_key: str | None = None
        """The hash of the token this socket is counted under, once ``connection_init`` sent
        one."""
        self.expiry: asyncio.Task[None] | None = None
        self.idle: asyncio.Task[None] | None = None
        self.runtime: ServiceContext = socket.app.state.runtime
        self.viewer: Viewer | None = None
        self.init_received = False
        self.operations: dict[str, asyncio.Task[None]] = {}
        self.send_lock = asyncio.Lock()
        self.closed = False

    async def send(self, message: dict[str, Any]) -> None:
        if self.closed:
            return
        text = json.dumps(message, separators=(",", ":"))
        async with self.send_lock:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                await self.socket.send_text(text)

    async def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await self.socket.close(code=code, reason=reason)

    async def run(self) -> None:
        timer = asyncio.create_task(self._init_timeout())
        try:
            while not self.closed:
                try:
                    raw = await self.socket.receive_data(mode="text")
                except WebSocketDisconnect:
                    break
                try:
                    await self._handle(raw)
                except _Close as close:
                    await self.close(close.code, close.reason)
        finally:
            self.closed = True
            timer.cancel()
            if self.token_key is not None:
                self.tokens.release(self.token_key)
            for task in (self.expiry, self.idle):
                if task is not None:
                    task.cancel()
            for task in list(self.operations.values()):
                task.cancel()
            for task in list(self.operations.values()):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _init_timeout(self) -> None:
        await asyncio.sleep(self.init_timeout)
        if not self.init_received:
            await self.close(4408, "Connection initialisation timeout")

    def _arm_idle(self) -> None:
        """(Re)start the idle timer: it runs while no operation of an authenticated viewer
        does."""
        if self.idle is not None:
            self.idle.cancel()
        self.idle = asyncio.create_task(self._idle_timeout())

    async def _idle_timeout(self) -> None:
        await asyncio.sleep(self.idle_timeout)
        await self.close(1000, "Idle timeout: no authenticated operation running")

    async def _guard_session(self, token: str, expires_at: datetime) -> None:
        """End what the customer's session token authorized when it expires, or as soon as
        it is revoked (the customer's id is notified on ``SESSION_CHANNEL``; the watch also
        re-reads the session every ``RECHECK_SECONDS``, in case a notification was lost)."""
        assert self.viewer is not None and self.viewer.customer_id is not None
        db = self.runtime.db
        try:
            listener = checkout_listener(self.runtime)
            async with listener.watch(str(self.viewer.customer_id), SESSION_CHANNEL) as watch:
                # LISTEN is active: a revocation from now on wakes the watch; one before, the
                # read sees.
                while await session_for_token(db, token) is not None:
                    remaining = (expires_at - wall_now()).total_seconds()
                    if remaining <= 0:
                        break
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(watch.wait(), remaining)
        except Exception:
            log.exception("watching a session for revocation failed; ending it at expiry")
            await asyncio.sleep(max((expires_at - wall_now()).total_seconds(), 0.0))
        if wall_now() >= expires_at:
            await self._end_session("the session token expired", "the session expired")
        else:
            await self._end_session("the session token was revoked", "the session was revoked")

    async def _guard_key(self, token: str, key_id: str) -> None:
        """End what an API key authorized once it is revoked, rotated or expired (its id is
        notified on ``SESSION_CHANNEL`` by a revocation or rotation; the watch also re-reads
        the key every ``RECHECK_SECONDS``, which sees an expiry)."""
        try:
            async with checkout_listener(self.runtime).watch(key_id, SESSION_CHANNEL) as watch:
                while await key_for_secret(self.runtime.db, token) is not None:
                    await watch.wait()
        except Exception:
            log.exception("watching an API key for revocation failed")
            return
        await self._end_session("the API key was revoked, rotated or expired", "the key ended")

    async def _end_session(self, message: str, reason: str) -> None:
        running = dict(self.operations)
        self.operations.clear()
        for task in running.values():
            task.cancel()
        for task in running.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for op_id in running:
            await self._error(
                op_id,
                [
                    {
                        "message": message,
                        "extensions": {"code": GraphQLErrorCode.UNAUTHENTICATED.value},
                    }
                ],
            )
        await self.close(4401, f"Unauthorized: {reason}")

    async def _handle(self, raw: str | bytes) -> None:
        size = len(raw.encode("utf-8")) if isinstance(raw, str) else len(raw)
        if size > self.max_message:
            raise _Close(4400, "Message too large")
        try:
            message = loads_json(raw)
        except (ValueError, UnicodeDecodeError):
            raise _Close(4400, "Invalid message: not JSON") from None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise _Close(4400, "Invalid message: no type")
        kind = message["type"]
        if kind == "connection_init":
            await self._on_init(message)
        elif kind == "ping":
            await self.send({"type": "pong"})
        elif kind == "pong":
            pass
        elif kind == "subscribe":
            self._on_subscribe(message)
        elif kind == "complete":
            op_id = message.get("id")
            if not isinstance(op_id, str):
                raise _Close(4400, "Invalid message: complete needs an id")
            task = self.operations.pop(op_id, None)
            if task is not None:
                task.cancel()
        else:
            raise _Close(4400, f"Invalid message type {kind[:40]!r}")

    async def _on_init(self, message: dict[str, Any]) -> None:
        if self.init_received:
            raise _Close(4429, "Too many initialisation requests")
        self.init_received = True
        payload = message.get("payload")
        if payload is not None and not isinstance(payload, dict):
            raise _Close(4400, "Invalid message: the connection_init payload must be an object")
        payload = payload or {}
        header = payload.get("authorization", payload.get("Authorization"))
        if header is not None and not isinstance(header, str):
            header = ""  # present but malformed: an invalid token
        token = bearer_token(header)
        if token:
            key = hash_token(token)
            if not self.tokens.take(key):
                raise _Close(TOO_MANY, "Too many connections for this token")
            self.token_key = key
        self.viewer = await resolve_viewer(self.runtime, header)
        if self.viewer.kind == "customer" and self.viewer.expires_at is not None:
            assert token
            self.expiry = asyncio.create_task(self._guard_session(token, self.viewer.expires_at))
        elif self.viewer.kind == "key" and self.viewer.key_id is not None:
            assert token
            self.expiry = asyncio.create_task(self._guard_key(token, self.viewer.key_id))
        await self.send({"type": "connection_ack"})
        self._arm_idle()

    def _on_subscribe(self, message: dict[str, Any]) -> None:
        if self.viewer is None:
            raise _Close(4401, "Unauthorized")
        op_id = message.get("id")
        payload = message.get("payload")
        if not isinstance(op_id, str) or not op_id or not isinstance(payload, dict):
            raise _Close(4400, "Invalid message: subscribe needs an id and a payload")
        if op_id in self.operations:
            raise _Close(4409, f"Subscriber for {op_id[:100]} already exists")
        if len(self.operations) >= MAX_OPERATIONS:
            raise _Close(4400, f"More than {MAX_OPERATIONS} operations at once")
        task = asyncio.create_task(self._operation(op_id, payload, self.viewer))
        self.operations[op_id] = task
        task.add_done_callback(lambda _: self._forget(op_id, task))
        if self.viewer.kind in ("admin", "key", "customer") and self.idle is not None:
            self.idle.cancel()  # busy: the idle timer restarts when the last operation ends
            self.idle = None

    def _forget(self, op_id: str, task: asyncio.Task[None]) -> None:
        if self.operations.get(op_id) is task:
            del self.operations[op_id]
        if not self.operations and self.idle is None and not self.closed:
            self._arm_idle()

    async def _operation(self, op_id: str, payload: dict[str, Any], viewer: Viewer) -> None:
        try:
            await self._run_operation(op_id, payload, viewer)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("subscription %s failed", op_id)
            await self.send(
                {
                    "type": "error",
                    "id": op_id,
                    "payload": [
                        {
                            "message": "Internal server error",
                            "extensions": {"code": GraphQLErrorCode.INTERNAL_SERVER_ERROR.value},
                        }
                    ],
                }
            )

    async def _error(self, op_id: str, errors: list[dict[str, Any]]) -> None:
        await self.send({"type": "error", "id": op_id, "payload": errors})

    async def _run_operation(self, op_id: str, payload: dict[str, Any], viewer: Viewer) -> None:
        query = payload.get("query")
        variables = payload.get("variables")
        operation_name = payload.get("operationName")
        problem = request_problem(query, variables, operation_name)
        if problem is not None:
            await self._error(op_id, [{"message": problem}])
            return
        assert isinstance(query, str)  # request_problem checked it
        prepared = self.cache.prepare(query)
        if prepared.errors or prepared.document is None:
            await self._error(op_id, [dict(e.formatted) for e in prepared.errors])
            return
        unstorable = variables_problem(variables)
        if unstorable is not None:
            await self._error(op_id, [dict(unstorable.formatted)])
            return
        operation = get_operation_ast(prepared.document, operation_name)
        if operation is None:
            await self._error(op_id, [{"message": "name the operation to run in 'operationName'"}])
            return
        context = Context(runtime=self.runtime, viewer=viewer)
        if operation.operation != OperationType.SUBSCRIPTION:
            result = await self.cache.execute(prepared.document, context, variables, operation_name)
            await self.send({"type": "next", "id": op_id, "payload": result_body(result)})
            await self.send({"type": "complete", "id": op_id})
            return
        stream = subscribe(
            self.cache.core_schema,
            prepared.document,
            context_value=context,
            variable_values=variables,
            operation_name=operation_name,
            executor_class=self.cache.schema.execution_context_class,
        )
        if isawaitable(stream):
            stream = await stream
        if isinstance(stream, ExecutionResult):
            await self._error(op_id, [format_error(e) for e in stream.errors or []])
            return
        try:
            async for result in stream:
                await self.send({"type": "next", "id": op_id, "payload": result_body(result)})
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
        await self.send({"type": "complete", "id": op_id})


def graphql_ws_route(settings: GraphQLSettings, cache: DocumentCache) -> WebsocketRouteHandler:
    """The WebSocket handler on ``/graphql`` (beside the HTTP handlers on the same path)."""
    addresses = _Counts(settings.ws_max_per_address)
    tokens = _Counts(settings.ws_max_per_token)

    @websocket("/graphql")
    async def graphql_ws(socket: WebSocket[Any, Any, Any]) -> None:
        offered = socket.scope.get("subprotocols") or []
        if PROTOCOL not in offered:
            # Refuse the upgrade: only graphql-transport-ws is spoken here.
            await socket.close(code=4406, reason="Subprotocol not acceptable")
            return
        await socket.accept(subprotocols=PROTOCOL)
        address = socket.client.host if socket.client else ""
        if not addresses.take(address):
            await socket.close(code=TOO_MANY, reason="Too many connections from this address")
            return
        try:
            await _Connection(socket, cache, settings, tokens).run()
        finally:
            addresses.release(address)

    return graphql_ws


__all__ = ["PROTOCOL", "graphql_ws_route"]

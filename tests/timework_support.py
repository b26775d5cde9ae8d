"""Helpers of the time, worker and live-update tests: catalog set-up over GraphQL, a runtime on
the test database, and real ``billing-gql`` processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import IO, Any

import httpx

from billing_gql.runtime import Runtime
from billing_gql.settings import BillingSettings, OutboundSettings, Settings
from billing_gql.testing import ADMIN_KEY, ApiClient

ADVANCE = """mutation($to: DateTime!) { advanceClock(to: $to) {
  now userErrors { field message code } } }"""


async def make_plan(api: ApiClient, code: str = "pro", **extra: Any) -> dict[str, Any]:
    data = await api.admin(
        """mutation($input: CreatePlanInput!) { createPlan(input: $input) {
             plan { id code } userErrors { field message code } } }""",
        {
            "input": {
                "code": code,
                "name": code.title(),
                "interval": "MONTH",
                "prices": [{"currency": "USD", "amount": "29.00"}],
                **extra,
            }
        },
    )
    plan: dict[str, Any] = data["createPlan"]["plan"]
    return plan


async def make_customer(api: ApiClient, external_id: str) -> dict[str, Any]:
    data = await api.admin(
        """mutation($input: UpsertCustomerInput!) { upsertCustomer(input: $input) {
             customer { id } userErrors { field message code } } }""",
        {"input": {"externalId": external_id}},
    )
    customer: dict[str, Any] = data["upsertCustomer"]["customer"]
    return customer


async def session_for(api: ApiClient, customer_id: str) -> str:
    data = await api.admin(
        "mutation($id: ID!) { createCustomerSession(customerId: $id) { token } }",
        {"id": customer_id},
    )
    token: str = data["createCustomerSession"]["token"]
    return token


async def advance(api: ApiClient, to: datetime) -> datetime:
    data = await api.admin(ADVANCE, {"to": to.isoformat()})
    return datetime.fromisoformat(data["advanceClock"]["now"])


START = datetime(2031, 1, 15, 10, 0, tzinfo=UTC)
DEV = OutboundSettings(allow_private_webhook_targets=True)
"""Development settings: outgoing webhooks may reach loopback receivers and fake hosts (not
resolved), as the tests' fake transports and local servers need."""
"""Tests first move the test clock here (it starts at the wall time of its first use)."""


@contextlib.asynccontextmanager
async def runtime_for(settings: Settings, **billing: Any) -> AsyncIterator[Runtime]:
    """A runtime on the test database (as a worker process builds it), closed afterwards."""
    if billing:
        settings = replace(settings, billing=replace(settings.billing, **billing))
    runtime = await Runtime.start(settings, apply_migrations=False)
    try:
        yield runtime
    finally:
        await runtime.close()


def manual_clock(**extra: Any) -> BillingSettings:
    return BillingSettings(manual_provider=True, test_clock=True, **extra)


# --- real processes ----------------------------------------------------------------------


class ServerProcess:
    """A ``billing-gql serve``/``worker`` subprocess; its output is collected on a thread."""

    def __init__(self, args: list[str], env: Mapping[str, str]) -> None:
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.url: str | None = None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "billing_gql.cli", *args],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # stdout carries only what the CLI promises (the "listening on" line); logs go to
        # stderr. Each is read on its own thread so neither pipe fills up.
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, True), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, False), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: IO[str] | None, is_stdout: bool) -> None:
        assert stream is not None
        for line in stream:
            self.lines.append(line.rstrip("\n"))
            if not is_stdout:
                continue
            match = re.match(r"listening on (http://\S+)$", line.strip())
            if match:
                self.url = match.group(1)
                self._ready.set()
            if line.strip() == "worker running":
                self._ready.set()
        if is_stdout:
            self._ready.set()

    async def wait_ready(self, seconds: float = 60.0) -> None:
        ready = await asyncio.to_thread(self._ready.wait, seconds)
        assert ready and self.proc.poll() is None, "\n".join(self.lines[-40:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for reader in self._readers:
            reader.join(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def output(self) -> str:
        return "\n".join(self.lines)


@contextlib.contextmanager
def server_process(args: list[str], env: Mapping[str, str]) -> Iterator[ServerProcess]:
    process = ServerProcess(args, env)
    try:
        yield process
    finally:
        process.stop()


def process_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a billing-gql process on the test database."""
    env = {
        "DATABASE_URL": database_url,
        "BILLING_GQL_ADMIN_KEYS": ADMIN_KEY,
        "BILLING_GQL_PLUGINS": "manual",
        "BILLING_GQL_DB_POOL_SIZE": "3",
    }
    env.update(extra)
    return env


def http_api(url: str) -> ApiClient:
    """An :class:`ApiClient` on a real server at ``url``."""
    return ApiClient(httpx.AsyncClient(base_url=url, timeout=30), ADMIN_KEY)

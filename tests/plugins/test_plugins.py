"""The plugin host: discovery, allow-list, duplicates, settings, HTTP client, webhook route."""

from __future__ import annotations

import hashlib
import hmac
import json
import textwrap
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import pytest
from fakes import EchoProvider

from billing_gql import (
    Provider,
    hookimpl,
    response_time,
)
from billing_gql.errors import PluginError
from billing_gql.plugins.http import HttpClientFactory
from billing_gql.plugins.settings import read_provider_settings
from billing_gql.providers.registry import ProviderRegistry, build_plugin_manager
from billing_gql.settings import PluginSettings, Settings
from billing_gql.testing import ApiClient, TestDatabase


class EchoPlugin:
    @hookimpl
    def register_providers(self) -> Sequence[type[Provider]]:
        return [EchoProvider]


class OtherEcho(EchoProvider):
    display_name = "Another echo"


class DuplicatePlugin:
    @hookimpl
    def register_providers(self) -> Sequence[type[Provider]]:
        return [OtherEcho]


def sign(body: bytes, secret: str = "s3cret") -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def settings_with(env: dict[str, str], **plugin_fields: object) -> Settings:
    return Settings(
        plugins=replace(PluginSettings(env=env, load_entry_points=False), **plugin_fields)
    )  # type: ignore[arg-type]


def test_settings_helper_reads_prefixed_variables() -> None:
    s = read_provider_settings(
        "echo",
        {"BILLING_GQL_ECHO_SECRET": "x", "BILLING_GQL_ECHO_REGION": ""},
        ["SECRET", "API_KEY"],
        {"REGION": "eu", "MODE": None},
    )
    assert s["SECRET"] == "x" and s["REGION"] == "eu" and "MODE" not in s
    assert not s.configured
    assert s.reason == "missing BILLING_GQL_ECHO_API_KEY"
    assert "x" not in repr(s)


def test_registry_configured_and_not() -> None:
    pm, origins = build_plugin_manager(settings_with({}), [EchoPlugin()])
    registry = ProviderRegistry.build(pm, origins, settings_with({}))
    assert not registry["echo"].configured
    assert registry["echo"].reason == "missing BILLING_GQL_ECHO_SECRET"
    settings = settings_with({"BILLING_GQL_ECHO_SECRET": "s"})
    pm, origins = build_plugin_manager(settings, [EchoPlugin()])
    registry = ProviderRegistry.build(pm, origins, settings)
    provider = registry.get_configured("echo")
    assert provider is not None and provider.settings["REGION"] == "eu"
    assert provider.capabilities() == {"checkout", "hosted_checkout", "recurring"}


def test_duplicate_provider_names_fail_startup_naming_both() -> None:
    settings = settings_with({})
    pm, origins = build_plugin_manager(settings, [EchoPlugin(), DuplicatePlugin()])
    with pytest.raises(PluginError) as info:
        ProviderRegistry.build(pm, origins, settings)
    message = str(info.value)
    assert '"echo"' in message and "EchoPlugin" in message and "DuplicatePlugin" in message


def _install_fake_distribution(root: Path, name: str, modules: dict[str, str]) -> None:
    dist = root / f"{name.replace('-', '_')}-1.2.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.2.3\n")
    lines = "\n".join(
        f"{ep} = {module}" for ep, module in ((m.split(":")[0], m.split(":")[1]) for m in modules)
    )
    (dist / "entry_points.txt").write_text(f"[billing_gql]\n{lines}\n")


class StrictEcho(EchoProvider):
    """Reads an integer setting at construction, as real providers do."""

    optional_settings = {"RETRIES": "3"}
    secret_settings = ("SECRET",)

    def __init__(self, context) -> None:  # type: ignore[no-untyped-def]
        super().__init__(context)
        self.retries = self.settings.int("RETRIES", 3)
        if self.retries > 9:
            raise ValueError(f"too many retries for secret {self.settings['SECRET']}")


class StrictPlugin:
    @hookimpl
    def register_providers(self) -> Sequence[type[Provider]]:
        return [StrictEcho]


@pytest.mark.parametrize(
    ("retries", "message"),
    [
        ("many", 'provider "echo" is misconfigured: BILLING_GQL_ECHO_RETRIES must be an integer'),
        ("10", 'provider "echo" is misconfigured: too many retries for secret ***'),
    ],
)
def test_a_malformed_setting_stops_startup_naming_it(retries: str, message: str) -> None:
    settings = settings_with(
        {"BILLING_GQL_ECHO_SECRET": "s3cr3t", "BILLING_GQL_ECHO_RETRIES": retries}
    )
    pm, origins = build_plugin_manager(settings, [StrictPlugin()])
    with pytest.raises(PluginError) as info:
        ProviderRegistry.build(pm, origins, settings)
    assert str(info.value) == message


def test_entry_points_and_allow_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "fake_echo_plugin.py").write_text(
        textwrap.dedent("""
        from billing_gql import hookimpl
        from fakes import EchoProvider

        @hookimpl
        def register_providers():
            return [EchoProvider]
    """)
    )
    (tmp_path / "exploding_plugin.py").write_text("raise RuntimeError('imported!')\n")
    _install_fake_distribution(
        tmp_path, "billing-gql-echo", {"echo:fake_echo_plugin": "", "boom:exploding_plugin": ""}
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    base = Settings(plugins=PluginSettings(env={"BILLING_GQL_ECHO_SECRET": "s"}))

    # The allow-list applies before import: the exploding plugin is never imported.
    allowed = replace(base, plugins=replace(base.plugins, allow=("echo",)))
    pm, origins = build_plugin_manager(allowed)
    registry = ProviderRegistry.build(pm, origins, allowed)
    assert list(registry) == ["echo"]
    assert registry["echo"].distribution == "billing-gql-echo"
    assert registry["echo"].version == "1.2.3"
    assert registry["echo"].configured

    with pytest.raises(PluginError, match="boom"):
        build_plugin_manager(base)


async def test_http_client_retries_honouring_retry_after() -> None:
    calls: list[httpx.Request] = []
    waits: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            return httpx.Response(429, headers={"retry-after": "2"})
        if len(calls) == 2:
            return httpx.Response(503)
        return httpx.Response(200, json={"ok": True})

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    factory = HttpClientFactory(httpx.MockTransport(handler), sleep=sleep, backoff=0.25)
    async with factory.client(base_url="https://api.test") as client:
        response = await client.post("/things", json={"a": 1}, headers={"Idempotency-Key": "k1"})
    assert response.status_code == 200
    assert len(calls) == 3 and calls[2].content == b'{"a":1}'
    assert waits[0] == 2.0 and 0.25 <= waits[1] <= 0.75


async def test_http_client_does_not_repeat_unsafe_posts_on_5xx() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(500)

    async def sleep(seconds: float) -> None:
        return None

    factory = HttpClientFactory(httpx.MockTransport(handler), sleep=sleep, max_retries=2)
    async with factory.client(base_url="https://api.test") as client:
        assert (await client.post("/x", json={})).status_code == 500
        assert calls == 1
        assert (await client.get("/x")).status_code == 500
        assert calls == 1 + 3  # the first try and two retries


async def test_http_client_repeats_requests_marked_idempotent_on_5xx() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        return httpx.Response(503 if len(calls) % 3 else 200)

    async def sleep(seconds: float) -> None:
        return None

    factory = HttpClientFactory(httpx.MockTransport(handler), sleep=sleep, max_retries=3)
    async with factory.client(base_url="https://api.test") as client:
        marked = await client.patch("/x", json={"on": True}, extensions={"idempotent": True})
        assert marked.status_code == 200 and calls == ["PATCH"] * 3
        calls.clear()
        posted = await client.post("/events", json={}, extensions={"idempotent": True})
        assert posted.status_code == 200 and calls == ["POST"] * 3
        calls.clear()
        unmarked = await client.patch("/x", json={"on": True})
        assert unmarked.status_code == 503 and calls == ["PATCH"]
        calls.clear()
        refused = await client.patch("/x", json={}, extensions={"idempotent": False})
        assert refused.status_code == 503 and calls == ["PATCH"]


def test_response_time_is_the_providers_date_header_else_now() -> None:
    dated = httpx.Response(200, headers={"date": "Sun, 22 Nov 2026 10:00:05 GMT"})
    assert response_time(dated) == datetime(2026, 11, 22, 10, 0, 5, tzinfo=UTC)
    assert response_time(dated).tzinfo == UTC
    for headers in ({}, {"date": "yesterday"}):
        before = datetime.now(UTC)
        assert before <= response_time(httpx.Response(200, headers=headers)) <= datetime.now(UTC)


async def test_webhook_route_status_codes(make_api, clean_database: TestDatabase) -> None:  # type: ignore[no-untyped-def]
    body = json.dumps({"id": "evt_1", "type": "thing.happened"}).encode()
    async with make_api(plugins=[EchoPlugin()], env={"BILLING_GQL_ECHO_SECRET": "s3cret"}) as api:
        api: ApiClient
        assert (await api.post_webhook("nope", body, {})).status_code == 404
        bad = await api.post_webhook("echo", body, {"x-signature": sign(body, "wrong")})
        assert bad.status_code == 401
        missing = await api.post_webhook("echo", body, {})
        assert missing.status_code == 401
        unreadable = b"not json"
        assert (
            await api.post_webhook("echo", unreadable, {"x-signature": sign(unreadable)})
        ).status_code == 400
        huge = b"x" * (1024 * 1024 + 1)
        assert (
            await api.post_webhook("echo", huge, {"x-signature": sign(huge)})
        ).status_code == 413
        first = await api.post_webhook("echo", body, {"x-signature": sign(body)})
        assert first.status_code == 200 and first.json() == {"ok": True, "success": True}
        again = await api.post_webhook("echo", body, {"x-signature": sign(body)})
        assert again.status_code == 200 and again.json()["ok"] is True
        providers = (
            await api.gql("{ providers { name displayName configured currencies capabilities } }")
        ).ok()["providers"]
        assert {
            "name": "echo",
            "displayName": "Echo",
            "configured": True,
            "currencies": ["USD"],
            "capabilities": ["checkout", "hosted_checkout", "recurring"],
        } in providers
    conn = await asyncpg.connect(clean_database.url)
    try:
        rows = await conn.fetch(
            "SELECT provider, event_id, event_type, body FROM webhook_deliveries"
        )
    finally:
        await conn.close()
    assert [(r["provider"], r["event_id"], r["event_type"]) for r in rows] == [
        ("echo", "evt_1", "thing.happened")
    ]
    assert bytes(rows[0]["body"]) == body


async def test_unconfigured_provider_webhook_is_404(make_api) -> None:  # type: ignore[no-untyped-def]
    async with make_api(plugins=[EchoPlugin()], env={}) as api:
        body = b'{"id": "1"}'
        assert (
            await api.post_webhook("echo", body, {"x-signature": sign(body)})
        ).status_code == 404
        providers = (await api.gql("{ providers { name configured } }")).ok()["providers"]
        assert {"name": "echo", "configured": False} in providers

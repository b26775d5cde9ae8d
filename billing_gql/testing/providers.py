"""Helpers for a provider package's own tests: an instance wired to a fake, the CLI."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Mapping
from typing import TypeVar

import httpx

from billing_gql.plugins.http import HttpClientFactory
from billing_gql.plugins.provider import Provider, ProviderContext
from billing_gql.plugins.settings import ProviderSettings
from billing_gql.testing.server import environment

__all__ = ["provider_for", "run_cli"]

P = TypeVar("P", bound=Provider)


def provider_for(
    cls: type[P],
    transport: httpx.AsyncBaseTransport,
    settings: Mapping[str, str],
    *,
    sleeps: list[float] | None = None,
) -> P:
    """An instance of ``cls`` as the core would build it, talking to ``transport`` (a fake).

    :param settings: setting values by short name (``API_KEY``); the class's optional
        settings fill in their defaults.
    :param sleeps: when given, the HTTP client records its retry waits here instead of
        sleeping (so tests of ``Retry-After`` run instantly).
    """
    values = {k: v for k, v in cls.optional_settings.items() if v is not None}
    values.update({k.upper(): v for k, v in settings.items()})
    missing = [name for name in cls.required_settings if not values.get(name)]

    async def record(seconds: float) -> None:
        if sleeps is not None:
            sleeps.append(seconds)

    http = (
        HttpClientFactory(transport, sleep=record, backoff=0.01)
        if sleeps is not None
        else HttpClientFactory(transport)
    )
    context = ProviderContext(
        name=cls.name,
        settings=ProviderSettings(cls.name, values, missing),
        http=http,
        logger=logging.getLogger(f"billing_gql.provider.{cls.name}"),
    )
    return cls(context)


def run_cli(*args: str, env: Mapping[str, str | None]) -> subprocess.CompletedProcess[str]:
    """``billing-gql ARGS`` in a subprocess with this environment minus every
    ``BILLING_GQL_*`` variable, plus ``env`` (a ``None`` value removes that variable, e.g.
    ``DATABASE_URL``)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_GQL_")}
    return subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "billing_gql.cli", *args],
        env=environment(full, env),
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )

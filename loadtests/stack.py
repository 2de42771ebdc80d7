"""A local llmq stack for the length of a load test: `llmq up` in a subprocess on a free
port, waited on until /ready, stopped (with everything it started) afterwards."""

from __future__ import annotations

import sys
from pathlib import Path

from llmq.redis_server import free_port
from llmq.stack import Child, descendants, kill_groups, llmq_command, process_groups, spawn, wait_until_ok

STOP_GRACE_S = 60.0  # `llmq up` stops its workers (which drain) and the gateway in turn


def _say(line: str) -> None:
    print(f"[loadtest] {line.strip()}", file=sys.stderr, flush=True)


class LocalStack:
    def __init__(self, up_args: tuple[str, ...] = (), log_dir: Path | None = None, ready_timeout_s: float = 600.0):
        self.up_args = tuple(up_args)
        self.log_dir = log_dir  # llmq-up.log goes there
        self.ready_timeout_s = ready_timeout_s
        self.port = 0
        self.child: Child | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "LocalStack":
        self.port = free_port()
        command = llmq_command("up", "--port", str(self.port), *self.up_args)
        _say("starting: llmq " + " ".join(command[3:]))
        self.child = spawn("llmq-up", command, self.log_dir)
        try:
            wait_until_ok(f"http://127.0.0.1:{self.port}/ready", self.ready_timeout_s, [self.child], _say)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.child is not None:
            # `llmq up` starts each of its children in a session of its own, so killing its group
            # would not reach them: note every group below it now, while the tree is still whole.
            groups = process_groups(descendants(self.child.process.pid))
            # SIGTERM: `llmq up` shuts its own children down; SIGKILL for what is left after the grace.
            self.child.stop(STOP_GRACE_S)
            kill_groups(groups)  # whatever outlived it (a worker stuck loading, Redis)
            self.child = None

    def log_tail(self, lines: int = 20) -> str:
        """The end of llmq-up.log (the workers' and gateway's output too), if it was written."""
        if self.log_dir is None or not (Path(self.log_dir) / "llmq-up.log").is_file():
            return ""
        return "\n".join((Path(self.log_dir) / "llmq-up.log").read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> "LocalStack":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

"""The local stack as child processes: a private redis-server, `llmq worker`s and an `llmq gateway`,
each in its own process group so stopping one stops everything it started. Used by `llmq up`, the
gateway benchmark and the integration tests."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from llmq.redis_server import RedisServer, free_port

PR_SET_PDEATHSIG = 1  # linux/prctl.h


@functools.cache
def _prctl():
    """libc's prctl, looked up in the parent: a child between fork and exec should load nothing."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _die_with_parent(prctl) -> None:
    """In the child before exec (Linux): SIGTERM when the process that started it dies, so a
    parent killed outright (SIGKILL, a timeout) leaves no orphaned stack behind."""
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (children, theirs, ...), read from /proc; empty where there is none."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, frontier = [], [pid]
    while frontier:
        children = parents.get(frontier.pop(), [])
        found += children
        frontier += children
    return found


def process_groups(pids: list[int]) -> set[int]:
    groups = set()
    for pid in pids:
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            pass
    return groups


def kill_groups(groups: set[int]) -> None:
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@dataclass
class Child:
    name: str
    process: subprocess.Popen
    log_path: Path | None = None

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def signal(self, signum: int) -> None:
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM the group, then SIGKILL what is left after `timeout`."""
        if self.alive:
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.signal(signal.SIGKILL)  # whatever of its group outlived the leader
        return self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def llmq_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "llmq", *args]


def spawn(name: str, args: list[str], log_dir: Path | None = None, env: dict[str, str] | None = None) -> Child:
    """Start args in a new session (its own process group); output to log_dir/<name>.log if given.
    env: variables set on top of this process's environment."""
    full_env = {**os.environ, **env} if env else None
    prctl = _prctl() if sys.platform.startswith("linux") else None
    preexec = functools.partial(_die_with_parent, prctl) if prctl else None
    if log_dir is None:
        return Child(name, subprocess.Popen(args, start_new_session=True, env=full_env, preexec_fn=preexec))
    log_path = Path(log_dir) / f"{name}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=full_env,
                                   preexec_fn=preexec)
    return Child(name, process, log_path)


@dataclass(frozen=True)
class EngineOptions:
    """What every worker of a stack gets for its engine (the worker's own defaults where None)."""

    device: str = "cpu"  # cpu | cuda | auto (cuda when there is one)
    dtype: str | None = None
    dummy_weights: bool = False
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    num_threads: int | None = None  # torch threads per worker, on CPU

    def worker_args(self) -> tuple[str, ...]:
        args = ["--device", self.device]
        for flag, value in (("--dtype", self.dtype), ("--max-num-seqs", self.max_num_seqs),
                            ("--max-num-batched-tokens", self.max_num_batched_tokens),
                            ("--num-threads", self.num_threads)):
            if value is not None:
                args += [flag, str(value)]
        return (*args, "--dummy-weights") if self.dummy_weights else tuple(args)

    def worker_envs(self, workers: int, visible: str | None = None) -> tuple[dict[str, str], ...]:
        """On cuda, one GPU per worker: the i-th of `visible` (CUDA_VISIBLE_DEVICES, default: ours),
        or GPU i when none is set; elsewhere nothing."""
        if not self.device.startswith("cuda") or workers < 2:
            return ()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
        gpus = [gpu.strip() for gpu in visible.split(",") if gpu.strip()] if visible else []
        if gpus and len(gpus) < workers:
            raise ValueError(f"{workers} workers on cuda need {workers} GPUs; CUDA_VISIBLE_DEVICES names {len(gpus)}")
        return tuple({"CUDA_VISIBLE_DEVICES": gpus[i] if gpus else str(i)} for i in range(workers))


def worker_args(model: str, backend: str, redis_url: str, worker_id: str, *extra: str) -> list[str]:
    return llmq_command("worker", "--model", model, "--backend", backend, "--redis-url", redis_url,
                        "--worker-id", worker_id, *extra)


def gateway_args(model: str, redis_url: str, port: int, host: str = "127.0.0.1", *extra: str) -> list[str]:
    return llmq_command("gateway", "--model", model, "--redis-url", redis_url, "--host", host,
                        "--port", str(port), *extra)


def wait_until_ok(url: str, timeout: float, watch: list[Child] = (), progress=None) -> None:
    """Poll GET url until it answers 2xx; fail early when a watched child exits."""
    started = time.monotonic()
    last_note = started
    while True:
        for child in watch:
            if not child.alive:
                raise RuntimeError(f"{child.name} exited with code {child.process.returncode}\n{child.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if 200 <= response.status < 300:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        now = time.monotonic()
        if now - started > timeout:
            raise TimeoutError(f"{url} not ready after {timeout:.0f} s")
        if progress and now - last_note >= 5:
            progress(f"  waiting for {url}: {now - started:.0f} s")
            last_note = now
        time.sleep(0.1)  # polling a readiness endpoint


@dataclass
class LocalStack:
    model: str
    backend: str = "torch"
    workers: int = 1
    port: int = 0  # 0: a free port
    worker_extra: tuple[str, ...] = ()
    engine: EngineOptions | None = None  # when given: its worker args (before worker_extra) and GPUs
    # Per worker (by index), environment variables on top of ours, e.g. its own CUDA_VISIBLE_DEVICES.
    worker_envs: tuple[dict[str, str], ...] = ()
    gateway_extra: tuple[str, ...] = ()
    log_dir: Path | None = None
    ready_path: str = "/ready"  # /ready waits for a worker of every served model; /health only for the gateway
    redis: RedisServer = field(default_factory=lambda: RedisServer(own_session=True))
    children: list[Child] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0, progress=None) -> "LocalStack":
        if self.children or self.redis.process is not None:
            raise RuntimeError("this stack is already started")
        try:
            self.redis.start()
            self.port = self.port or free_port()
            envs = self.worker_envs or (self.engine.worker_envs(self.workers) if self.engine else ())
            for i in range(self.workers):
                self.start_worker(f"worker-{i}", env=envs[i] if i < len(envs) else None)
            self.children.append(spawn("gateway", gateway_args(self.model, self.redis.url, self.port,
                                                               "127.0.0.1", *self.gateway_extra), self.log_dir))
            wait_until_ok(self.url + self.ready_path, timeout, self.children, progress)
        except BaseException:
            self.stop()
            raise
        return self

    def start_worker(self, worker_id: str, *extra: str, env: dict[str, str] | None = None) -> Child:
        engine_args = self.engine.worker_args() if self.engine else ()
        args = worker_args(self.model, self.backend, self.redis.url, worker_id, *engine_args, *self.worker_extra, *extra)
        child = spawn(worker_id, args, self.log_dir, env)
        self.children.append(child)
        return child

    def stop(self, timeout: float = 10.0) -> None:
        # Gateway first (no new work), then workers (they drain), Redis last.
        for child in reversed(self.children):
            child.signal(signal.SIGTERM)
        for child in reversed(self.children):
            child.stop(timeout)
        self.children.clear()
        self.redis.stop()

    def __enter__(self) -> "LocalStack":
        return self if self.children else self.start()  # `with stack.start(...)` starts it once

    def __exit__(self, *exc) -> None:
        self.stop()

"""`llmq loadtest compare` with a backend whose stack never becomes ready: the backend is
marked failed with its reason in compare.json, and no process of its stack outlives it."""

import json
import re
import uuid
from pathlib import Path

import pytest

from loadtests.compare import COMPARE_FILE, TABLE_FILE, run_compare
from loadtests.config import RunConfig

pytestmark = pytest.mark.integration


def processes_with(marker: bytes, file: str = "environ") -> list[int]:
    """Live processes whose /proc/PID/<file> (environ, cmdline) holds `marker`."""
    found = []
    for path in Path("/proc").glob(f"[0-9]*/{file}"):
        try:
            if marker in path.read_bytes():
                found.append(int(path.parent.name))
        except OSError:
            continue
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_a_stack_that_never_gets_ready_is_failed_and_leaves_no_process(model_dir, tmp_path, monkeypatch):
    mark = f"LLMQ_TEST_STACK_MARK={uuid.uuid4().hex}"
    monkeypatch.setenv(*mark.split("="))  # every process of the stack inherits it
    # The worker serves a name the gateway does not: /ready never answers 200.
    monkeypatch.setenv("LLMQ_SERVED_MODEL_NAME", "a-name-nobody-asked-for")
    config = RunConfig(url="", out=str(tmp_path), users=1, duration_s=1)

    result = run_compare(config, ["null"], ("--model", str(model_dir)), ready_timeout_s=12)

    log = (tmp_path / "null" / "llmq-up.log").read_text()
    assert "loading null engine" in log  # a worker was running when the stack gave up
    assert processes_with(mark.encode()) == []
    # redis-server rewrites its environment (process title), so it is found by its address.
    redis_port = re.search(r"redis://127\.0\.0\.1:(\d+)", log)
    assert redis_port, log[-2000:]
    assert processes_with(f"127.0.0.1:{redis_port.group(1)}".encode(), "cmdline") == []
    assert result["status"] == {"null": "failed"}
    assert "TimeoutError" in result["summaries"]["null"]["error"]
    written = json.loads((tmp_path / COMPARE_FILE).read_text())
    assert written["status"] == {"null": "failed"} and written["summaries"] == result["summaries"]
    assert (tmp_path / TABLE_FILE).read_text().startswith("metric")

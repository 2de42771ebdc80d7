"""`llmq up` brings the stack up, answers, and leaves no process behind after Ctrl-C."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from llmq.redis_server import free_port
from tests.integration.helpers import wait_for

pytestmark = pytest.mark.integration


def children_of(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_up_serves_and_ctrl_c_stops_everything(model_dir, tmp_path):
    port = free_port()
    out = tmp_path / "up.out"
    with open(out, "wb") as sink:
        up = subprocess.Popen([sys.executable, "-m", "llmq", "up", "--backend", "null", "--model", str(model_dir),
                               "--port", str(port), "--workers", "2"], stdout=sink, stderr=subprocess.STDOUT)
    children: set[int] = set()
    try:
        wait_for(lambda: b"llmq is up" in out.read_bytes() or up.poll() is not None, 120, "llmq up", interval=0.1)
        assert up.poll() is None, out.read_text()
        text = out.read_text()
        assert f"http://127.0.0.1:{port}/v1" in text and "curl " in text
        children = children_of(up.pid)  # while up lives, so these ids are surely ours
        assert len(children) == 4  # redis, two workers, the gateway
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=30)
        reply = client.chat.completions.create(model=model_dir.name, messages=[{"role": "user", "content": "hi"}],
                                               max_tokens=5)
        assert reply.usage.completion_tokens == 5
        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 0, out.read_text()
        assert not [pid for pid in children if alive(pid)]
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        for pid in children:
            if alive(pid):
                os.killpg(pid, signal.SIGKILL)


def test_engine_options_give_each_cuda_worker_its_own_gpu():
    from llmq.stack import EngineOptions

    quick_start = EngineOptions(num_threads=2)
    assert quick_start.worker_args() == ("--device", "cpu", "--num-threads", "2")
    assert quick_start.worker_envs(2) == ()
    gpu = EngineOptions(device="cuda", dtype="bfloat16", dummy_weights=True, max_num_seqs=64, max_num_batched_tokens=4096)
    assert gpu.worker_args() == ("--device", "cuda", "--dtype", "bfloat16", "--max-num-seqs", "64",
                                 "--max-num-batched-tokens", "4096", "--dummy-weights")
    assert gpu.worker_envs(2, visible="") == ({"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"})
    assert gpu.worker_envs(2, visible="3,5") == ({"CUDA_VISIBLE_DEVICES": "3"}, {"CUDA_VISIBLE_DEVICES": "5"})
    with pytest.raises(ValueError, match="need 3 GPUs"):
        gpu.worker_envs(3, visible="0,1")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's")
def test_a_child_of_the_stack_dies_with_the_process_that_started_it():
    """`llmq up` killed outright (SIGKILL, a job's timeout) must not leave its workers running."""
    starter = ("import sys, time; from llmq.stack import spawn; "
               "child = spawn('sleeper', [sys.executable, '-c', 'import time; time.sleep(600)']); "
               "print(child.process.pid, flush=True); time.sleep(600)")
    parent = subprocess.Popen([sys.executable, "-c", starter], stdout=subprocess.PIPE, text=True)
    child = None
    try:
        child = int(parent.stdout.readline())
        assert alive(child)
        parent.kill()
        parent.wait()
        wait_for(lambda: not alive(child), 10, "the orphaned child to exit", interval=0.05)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if child is not None and alive(child):
            os.kill(child, signal.SIGKILL)

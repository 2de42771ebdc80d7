"""compose.yaml is valid against the Compose spec (offline, vendored schema) and keeps its invariants."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "compose.yaml"


def check_jsonschema(path: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent)) or shutil.which("check-jsonschema")
    assert exe, "check-jsonschema is a dev dependency"
    return subprocess.run([exe, "--builtin-schema", "vendor.compose-spec", str(path)],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE.read_text())  # resolves anchors and << merges like compose does


@pytest.fixture(scope="module")
def services(compose):
    return compose["services"]


def gpu_devices(service: dict) -> list[dict]:
    return service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])


def workers(services: dict) -> dict:
    return {name: s for name, s in services.items() if s.get("command", [None, None])[:2] == ["llmq", "worker"]}


def test_schema_accepts_compose_yaml():
    result = check_jsonschema(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_rejects_a_broken_file(tmp_path):
    broken = tmp_path / "compose.yaml"
    broken.write_text("services:\n  redis:\n    image: redis\n    ports: 6379\n    restart: sometimes\n")
    assert check_jsonschema(broken).returncode != 0


def test_each_gpu_worker_owns_a_distinct_gpu(services):
    gpu_workers = {name: s for name, s in workers(services).items() if gpu_devices(s)}
    assert len(gpu_workers) >= 2
    ids = []
    for name, service in gpu_workers.items():
        [device] = gpu_devices(service)
        assert device["capabilities"] == ["gpu"] and len(device["device_ids"]) == 1, name
        assert service["environment"]["LLMQ_DEVICE"] == "cuda", name
        ids += device["device_ids"]
    assert len(ids) == len(set(ids)), f"GPU workers share a device: {ids}"


def test_cpu_worker_is_scalable_under_its_profile(services):
    cpu = services["worker-cpu"]
    assert cpu["profiles"] == ["cpu"] and not gpu_devices(cpu)
    assert cpu["environment"]["LLMQ_DEVICE"] == "cpu"
    assert "container_name" not in cpu and "ports" not in cpu  # both would break --scale


def test_redis_has_a_password_and_no_published_port(services):
    redis = services["redis"]
    assert "ports" not in redis
    command = redis["command"]
    password = command[command.index("--requirepass") + 1]
    assert password
    for name, service in {**workers(services), "gateway": services["gateway"]}.items():
        url = service["environment"]["LLMQ_REDIS_URL"]
        assert url == f"redis://:{password}@redis:6379/0", name


def test_gateway_scales_behind_a_port_range(services):
    gateway = services["gateway"]
    assert "container_name" not in gateway
    [mapping] = gateway["ports"]
    host_part = mapping.rsplit(":", 1)[0]
    default = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", host_part)
    start, end = (int(p) for p in default.split("-"))
    assert end > start, "a single host port would collide under --scale gateway=N"


def test_every_long_running_service_has_a_healthcheck(services):
    for name, service in services.items():
        if service.get("restart") != "no":
            assert service.get("healthcheck", {}).get("test"), name


def test_workers_and_gateway_share_the_model_volume(compose, services):
    assert "models" in compose["volumes"]
    for name in [*workers(services), "gateway", "models"]:
        assert "models:/data/models" in services[name]["volumes"], name
        if name != "models":
            assert services[name]["depends_on"]["models"]["condition"] == "service_completed_successfully"


def test_workers_get_longer_to_stop_than_their_drain_grace(services):
    for name, service in workers(services).items():
        grace = float(service["environment"]["LLMQ_DRAIN_GRACE_S"])
        assert float(service["stop_grace_period"].rstrip("s")) > grace, name

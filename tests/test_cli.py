import subprocess
import sys

import pytest


def run_llmq(*args: str) -> subprocess.CompletedProcess:
    code = (
        "import sys; from llmq.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
        "    print('TORCH_LOADED' if 'torch' in sys.modules else 'TORCH_ABSENT'); raise"
    )
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


def test_top_level_help_lists_every_command_without_importing_them():
    result = run_llmq("--help")
    assert result.returncode == 0
    for name in ("up", "gateway", "keys", "worker", "models", "bench", "loadtest"):
        assert f"  {name} " in result.stdout
    assert "TORCH_ABSENT" in result.stdout


@pytest.mark.parametrize("command", [["gateway", "--help"], ["keys", "--help"], ["loadtest", "--help"]])
def test_gateway_side_commands_never_load_torch(command):
    result = run_llmq(*command)
    assert result.returncode == 0, result.stderr
    assert "TORCH_ABSENT" in result.stdout


def test_unknown_command_is_a_usage_error():
    result = run_llmq("serve-everything")
    assert result.returncode == 2
    assert "No such command" in result.stderr

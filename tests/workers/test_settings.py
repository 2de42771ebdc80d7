import click
import pytest
from click.testing import CliRunner

from workers.cli import _engine_options, worker
from workers.settings import WorkerSettings


def test_settings_fill_the_engine_config_and_the_served_name():
    settings = WorkerSettings(model="/models/SmolLM2-135M-Instruct", concurrency=8, kv_cache_tokens=4096)
    config = settings.engine_config()
    assert settings.served_model_name == "SmolLM2-135M-Instruct"
    assert (config.model, config.max_num_seqs, config.kv_cache_tokens) == ("/models/SmolLM2-135M-Instruct", 8, 4096)
    assert WorkerSettings(model="/m", max_num_seqs=32).engine_config().max_num_seqs == 32


@pytest.mark.parametrize("bad", [dict(concurrency=0), dict(drain_grace_s=-1), dict(redis_url="localhost:6379")])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError):
        WorkerSettings(model="/m", **bad)


def test_engine_options_parse_json_values():
    assert _engine_options(("tokens_per_s=50", "ttft-s=0.5", "mode=fast")) == (
        ("tokens_per_s", 50), ("ttft_s", 0.5), ("mode", "fast"))
    with pytest.raises(click.BadParameter):
        _engine_options(("no-equals-sign",))


def test_every_option_reads_its_llmq_variable():
    result = CliRunner().invoke(worker, [], env={"LLMQ_WORKER_CONCURRENCY": "0"})
    assert result.exit_code == 2 and "concurrency must be >= 1" in result.output
    for param in worker.params:
        if param.name != "help":
            assert param.envvar and param.envvar.startswith("LLMQ_"), param.name

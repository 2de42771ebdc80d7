import json

import pytest
from click.testing import CliRunner

from engine.backends import create_engine
from engine.bench import engine_bench
from engine.bench_timing import RequestTiming, percentile, run_requests, synthetic_prompts, throughput
from engine.config import EngineConfig
from engine.models.dummy import shipped_config, shipped_configs, write_dummy_model
from engine.types import SamplingParams


@pytest.fixture
def tiny_folder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": 1000, "max_position_embeddings": 512}))
    return tmp_path


def test_bench_runs_end_to_end_and_prints_the_json_line_last(tiny_folder):
    args = ["--backend", "null", "--vs", "null", "--model", str(tiny_folder),
            "--concurrency", "3", "--max-tokens", "5", "--prompt-tokens", "4", "--repeat", "2"]
    result = CliRunner().invoke(engine_bench, args)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    report = json.loads(lines[-1])
    assert report["backend"] == "null" and report["baseline"] == "null"
    assert report["output_tokens"] == {"null-baseline": 15, "null": 15}
    assert report["throughput_ratio"] > 0 and report["decode_ratio"] > 0
    assert set(report["ttft_s"]) == set(report["peak_rss_mib"]) == {"null", "null-baseline"}
    assert any(line.startswith("null ") for line in lines[:-1])  # the table


def test_bench_alone_has_no_ratios(tiny_folder):
    args = ["--backend", "null", "--vs", "none", "--model", str(tiny_folder), "--concurrency", "2", "--max-tokens", "3"]
    result = CliRunner().invoke(engine_bench, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["throughput_ratio"] is None and list(report["throughput_tok_s"]) == ["null"]


def test_missing_model_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(engine_bench, ["--backend", "null", "--model", str(tmp_path / "nowhere")])
    assert result.exit_code != 0 and "no model folder" in result.output


def test_run_requests_times_every_token(tiny_folder):
    engine = create_engine("null", EngineConfig(model=str(tiny_folder)))
    prompts = synthetic_prompts(4, 6, vocab_size=1000)
    timings = run_requests(engine, prompts, SamplingParams(max_tokens=7, ignore_eos=True))
    assert [t.num_tokens for t in timings] == [7] * 4
    assert all(t.finish_reason == "length" and t.ttft >= 0 for t in timings)
    assert throughput(timings) > 0


def test_synthetic_prompts_are_distinct_and_in_vocabulary():
    prompts = synthetic_prompts(5, 8, vocab_size=100)
    assert len({tuple(p) for p in prompts}) == 5
    assert all(32 <= t < 100 for p in prompts for t in p)


def test_timing_arithmetic():
    timing = RequestTiming("a", added=10.0, token_times=[10.5, 11.0, 11.5, 12.5])
    assert timing.ttft == 0.5
    assert timing.decode_tokens_per_s == 3 / 2.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0


def test_shipped_configs_are_llamas():
    assert {"llama-3.1-8b", "smollm2-135m"} <= set(shipped_configs())
    big = shipped_config("llama-3.1-8b")
    assert (big["hidden_size"], big["num_hidden_layers"], big["num_key_value_heads"]) == (4096, 32, 8)
    with pytest.raises(KeyError, match="llama-3.1-8b"):
        shipped_config("no-such-model")


def test_dummy_folder_serves_with_random_weights(tmp_path, model_dir):
    folder = write_dummy_model("smollm2-135m", tmp_path / "dummy", tokenizer_from=model_dir)
    assert (folder / "tokenizer.json").is_file() and not (folder / "model.safetensors").exists()
    engine = create_engine("hf", EngineConfig(model=str(folder), dummy_weights=True, device="cpu"))
    timings = run_requests(engine, [[1, 2, 3]], SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True))
    engine.close()
    assert timings[0].num_tokens == 3


def test_suite_gpu_hands_the_options_to_the_gpu_suite(monkeypatch):
    import sys
    import types

    received = []
    fake = types.ModuleType("engine.bench_gpu")
    fake.run_gpu_suite = received.append
    monkeypatch.setitem(sys.modules, "engine.bench_gpu", fake)
    result = CliRunner().invoke(engine_bench, ["--suite", "gpu", "--model", "llama-3.1-8b", "--concurrency", "4"])
    assert result.exit_code == 0, result.output
    (options,) = received
    assert options.model == "llama-3.1-8b" and options.concurrency == 4 and options.suite == "gpu"


def test_unknown_backend_is_refused():
    result = CliRunner().invoke(engine_bench, ["--backend", "nope"])
    assert result.exit_code != 0 and "nope" in result.output


def test_gpu_suite_engine_timings_take_the_median_of_several_long_prompts(tmp_path):
    # The engine part of the GPU suite, on the CPU with a small random model: one TTFT sample could
    # catch a host stall, so the long prompt's TTFT is a median and the table shows the spread.
    from engine.bench_gpu_engine import LONG_PROMPT_SAMPLES, engine_timings
    from engine.bench_gpu_table import format_table

    folder = write_dummy_model("smollm2-135m", tmp_path / "smollm2")
    numbers = engine_timings(folder, prompt_len=8, new_tokens=3, concurrency=0, concurrent_out=1, long_prompt=60,
                             device="cpu")
    samples = numbers["ttft_long_samples_s"]
    assert len(samples) == LONG_PROMPT_SAMPLES and all(s > 0 for s in samples)
    assert numbers["ttft_long_s"] == sorted(samples)[len(samples) // 2]
    table = format_table({"device": "cpu", "torch": "x", "engine": numbers, "options": {}})
    assert f"median of {LONG_PROMPT_SAMPLES}" in table

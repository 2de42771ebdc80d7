"""`llmq bench engine`: one backend against a baseline, same machine, same run.

Two measurements per backend, each backend in its own process (engine/bench_session.py), rounds
alternating between the backends and never overlapping:
- throughput: `concurrency` requests added at once, `max_tokens` each (ignore_eos, greedy);
  output tokens per second from the first add to the last token.
- decode: one request alone; tokens per second after its first token (TTFT excluded).
Prints a table, then (last line) one JSON object with throughput_ratio and decode_ratio
(backend over baseline).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import click

from engine.backends import BACKENDS
from engine.config import EngineConfig


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """Everything `llmq bench engine` was asked; the GPU suite receives it too."""

    backend: str
    baseline: str | None
    model: str  # a model folder (resolved)
    dummy_weights: bool
    device: str
    dtype: str
    num_threads: int | None
    concurrency: int
    max_tokens: int
    prompt_tokens: int
    repeat: int
    suite: str


def compare(options: BenchOptions) -> dict:
    """Measure backend and baseline, rounds alternating between them; the report the JSON line prints."""
    from engine.bench_session import BackendSession
    from engine.bench_timing import median, synthetic_prompts

    # Every request gets its own prompt (warm-up and rounds too), so no backend serves one from
    # a prefix cache that an earlier request filled.
    per_round = options.concurrency + 1
    prompts = synthetic_prompts(per_round * (options.repeat + 1), options.prompt_tokens, _vocab_size(Path(options.model)))
    rounds = [(prompts[i * per_round], prompts[i * per_round + 1 : (i + 1) * per_round]) for i in range(1, options.repeat + 1)]
    config = EngineConfig(
        model=options.model, dummy_weights=options.dummy_weights, device=options.device, dtype=options.dtype,
        num_threads=options.num_threads,
    )
    # Labels name the rows and JSON keys; a backend measured against itself keeps both rows.
    labels = {"backend": options.backend}
    if options.baseline:
        labels["baseline"] = options.baseline if options.baseline != options.backend else f"{options.baseline}-baseline"
    sessions: dict[str, BackendSession] = {}
    results: dict[str, dict] = {}
    try:
        for role in ("baseline", "backend"):
            if role in labels:
                sessions[labels[role]] = BackendSession(labels[role], getattr(options, role), config, prompts[1:per_round])
        runs: dict[str, list[dict]] = {label: [] for label in sessions}
        for number, (decode_prompt, batch_prompts) in enumerate(rounds, start=1):
            for label, session in sessions.items():
                runs[label].append(session.run_round(number, decode_prompt, batch_prompts, options.max_tokens))
        for label, session in sessions.items():
            # The median round: one slow spell (another process took the CPU) does not decide the result.
            medians = {key: median([run[key] for run in runs[label]]) for key in runs[label][0]}
            results[label] = {"load_s": session.load_s, **medians}
    finally:
        for label, session in sessions.items():
            try:
                peak = session.close()
            except Exception:  # noqa: BLE001 - a crashed backend process must not hide the first error
                peak = None
            if label in results:
                results[label]["peak_rss_mib"] = peak
    mine, base = results[labels["backend"]], results.get(labels.get("baseline"))
    ratio = lambda key: mine[key] / base[key] if base and base[key] else None  # noqa: E731
    return {
        "bench": "engine",
        **{k: v for k, v in asdict(options).items() if k != "suite"},
        "cpu_count": os.cpu_count(),
        "throughput_ratio": ratio("throughput_tok_s"),
        "decode_ratio": ratio("decode_tok_s"),
        **{key: {name: r[key] for name, r in results.items()} for key in next(iter(results.values()))},
    }


def print_table(report: dict) -> None:
    columns = [
        ("load_s", "load s", "{:.1f}"), ("ttft_s", "TTFT ms (1 req)", "{:.0f}"),
        ("decode_tok_s", "decode tok/s", "{:.1f}"), ("batch_ttft_s", "TTFT ms (batch)", "{:.0f}"),
        ("throughput_tok_s", "throughput tok/s", "{:.1f}"), ("peak_rss_mib", "peak RSS MiB", "{:.0f}"),
    ]
    click.echo(f"{'backend':<12}" + "".join(f"{title:>18}" for _, title, _ in columns))
    for name in report["load_s"]:
        cells = []
        for key, title, spec in columns:
            value = report[key][name]
            text = "-" if value is None else spec.format(value * (1000 if "ms" in title else 1))
            cells.append(f"{text:>18}")
        click.echo(f"{name:<12}" + "".join(cells))
    if report["throughput_ratio"] is not None:
        click.echo(f"{report['backend']} / {report['baseline']}: throughput x{report['throughput_ratio']:.2f}, "
                   f"decode x{report['decode_ratio']:.2f}  ({report['concurrency']} concurrent requests, "
                   f"{report['max_tokens']} new tokens each, {report['cpu_count']} CPUs)")


def _vocab_size(folder: Path) -> int:
    config = json.loads((folder / "config.json").read_text())
    return int(config.get("vocab_size", 32000))


def _resolve_model(model: str | None, dummy_weights: bool, scratch: Path) -> str:
    from engine.models.dummy import resolve_dummy_model, shipped_configs
    from llmq.paths import resolve_model

    path = resolve_model(model)
    if (path / "config.json").is_file():
        return str(path)
    if dummy_weights and model in shipped_configs():
        return str(resolve_dummy_model(model, scratch))
    hint = "run `llmq models pull`" if model is None else f"or, with --dummy-weights, one of {', '.join(shipped_configs())}"
    raise click.ClickException(f"no model folder at {path}: {hint}")


@click.command("engine")
@click.option("--backend", type=click.Choice(list(BACKENDS)), default="torch", show_default=True,
              envvar="LLMQ_BENCH_BACKEND", help="Backend to measure.")
@click.option("--vs", "baseline", type=click.Choice([*BACKENDS, "none"]), default="hf", show_default=True,
              envvar="LLMQ_BENCH_VS", help="Baseline backend ('none': measure the backend alone).")
@click.option("--model", default=None, envvar="LLMQ_MODEL",
              help="Model folder or cached name (default: the default model); with --dummy-weights also a shipped config.")
@click.option("--dummy-weights", is_flag=True, envvar="LLMQ_DUMMY_WEIGHTS", help="Random weights of the model's config.")
@click.option("--device", default="auto", show_default=True, envvar="LLMQ_DEVICE")
@click.option("--dtype", default="auto", show_default=True, envvar="LLMQ_DTYPE")
@click.option("--num-threads", type=int, default=None, envvar="LLMQ_NUM_THREADS", help="torch threads on CPU.")
@click.option("--concurrency", type=click.IntRange(min=1), default=16, show_default=True, envvar="LLMQ_BENCH_CONCURRENCY")
@click.option("--max-tokens", type=click.IntRange(min=2), default=64, show_default=True, envvar="LLMQ_BENCH_MAX_TOKENS")
@click.option("--prompt-tokens", type=click.IntRange(min=1), default=32, show_default=True, envvar="LLMQ_BENCH_PROMPT_TOKENS")
@click.option("--repeat", type=click.IntRange(min=1), default=3, show_default=True, envvar="LLMQ_BENCH_REPEAT",
              help="Rounds of both measurements; the median round is reported.")
@click.option("--suite", type=click.Choice(["compare", "gpu"]), default="compare", show_default=True,
              envvar="LLMQ_BENCH_SUITE", help="compare: backend vs baseline; gpu: the GPU suite.")
def engine_bench(backend, baseline, model, dummy_weights, device, dtype, num_threads, concurrency, max_tokens,
                 prompt_tokens, repeat, suite) -> None:
    """Measure a backend against a baseline: a table, then one JSON line."""
    if suite == "gpu":
        _run_gpu_suite(BenchOptions(
            backend=backend, baseline=None, model=_gpu_suite_model(model), dummy_weights=True, device=device,
            dtype=dtype, num_threads=num_threads, concurrency=concurrency, max_tokens=max_tokens,
            prompt_tokens=prompt_tokens, repeat=repeat, suite=suite,
        ))
        return
    with tempfile.TemporaryDirectory(prefix="llmq-bench-") as scratch:
        options = BenchOptions(
            backend=backend, baseline=None if baseline == "none" else baseline,
            model=_resolve_model(model, dummy_weights, Path(scratch)), dummy_weights=dummy_weights, device=device,
            dtype=dtype, num_threads=num_threads, concurrency=concurrency, max_tokens=max_tokens,
            prompt_tokens=prompt_tokens, repeat=repeat, suite=suite,
        )
        report = compare(options)
    print_table(report)
    click.echo(json.dumps(report))


def _gpu_suite_model(model: str | None) -> str:
    """The GPU suite builds its own random-weight models from a shipped config's name."""
    from llmq.paths import resolve_model

    path = resolve_model(model)
    return str(path) if (path / "config.json").is_file() else (model or "")


def _run_gpu_suite(options: BenchOptions) -> None:
    try:
        from engine.bench_gpu import run_gpu_suite  # written for CUDA hosts; imported only here
    except ModuleNotFoundError as error:
        if error.name != "engine.bench_gpu":
            raise
        raise click.ClickException("this checkout has no GPU suite (engine/bench_gpu.py)") from None
    run_gpu_suite(options)

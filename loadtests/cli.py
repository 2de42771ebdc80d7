"""`llmq loadtest run|compare`. Locust is imported only inside the driver process."""

from __future__ import annotations

import contextlib
import functools
import sys
import time
from pathlib import Path

import click

from loadtests import shapes
from loadtests.config import RunConfig
from loadtests.prompts import Length, PromptConfig


def _length(ctx, param, value) -> Length:
    try:
        return Length.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


LOAD_OPTIONS = [
    click.option("--out", envvar="LLMQ_LOADTEST_OUT", default=None,
                 help="Report folder. Default: out/loadtest-<time>."),
    click.option("--model", envvar="LLMQ_LOADTEST_MODEL", default="", help="Model name. Default: the first the server lists."),
    click.option("--api-key", envvar="LLMQ_LOADTEST_API_KEY", default="none", show_default=True),
    click.option("--shape", envvar="LLMQ_LOADTEST_SHAPE", type=click.Choice(shapes.SHAPES), default="fixed", show_default=True,
                 help="fixed: --users for --duration; ramp: --ramp-start, +--ramp-step ... --users; sweep: 1, 2, 4 ... --users."),
    click.option("--users", envvar="LLMQ_LOADTEST_USERS", type=click.IntRange(min=1), default=4, show_default=True,
                 help="Concurrent users (fixed), or the top of a ramp or sweep."),
    click.option("--duration", envvar="LLMQ_LOADTEST_DURATION", type=click.FloatRange(min=1), default=60.0, show_default=True,
                 help="Seconds, for the fixed shape."),
    click.option("--stage-duration", envvar="LLMQ_LOADTEST_STAGE_DURATION", type=click.FloatRange(min=1), default=30.0,
                 show_default=True, help="Seconds per ramp or sweep stage."),
    click.option("--ramp-start", envvar="LLMQ_LOADTEST_RAMP_START", type=click.IntRange(min=1), default=1, show_default=True),
    click.option("--ramp-step", envvar="LLMQ_LOADTEST_RAMP_STEP", type=click.IntRange(min=1), default=1, show_default=True),
    click.option("--mix", envvar="LLMQ_LOADTEST_MIX", type=click.Choice(["fixed", "chat"]), default="fixed", show_default=True,
                 help="fixed: the lengths below; chat: a realistic mix of questions, summaries, conversations."),
    click.option("--prompt-tokens", envvar="LLMQ_LOADTEST_PROMPT_TOKENS", default="128", show_default=True,
                 callback=_length, help="N, or LOW:HIGH for uniform lengths."),
    click.option("--output-tokens", envvar="LLMQ_LOADTEST_OUTPUT_TOKENS", default="128", show_default=True,
                 callback=_length, help="max_tokens: N, or LOW:HIGH."),
    click.option("--system-prompts", envvar="LLMQ_LOADTEST_SYSTEM_PROMPTS", type=click.IntRange(min=0), default=0,
                 show_default=True, help="Distinct system prompts the requests share (prefix caching)."),
    click.option("--system-tokens", envvar="LLMQ_LOADTEST_SYSTEM_TOKENS", type=click.IntRange(min=1), default=256, show_default=True),
    click.option("--seed", envvar="LLMQ_LOADTEST_SEED", type=int, default=0, show_default=True),
    click.option("--ignore-eos/--no-ignore-eos", envvar="LLMQ_LOADTEST_IGNORE_EOS", default=True, show_default=True,
                 help="Ask the server to generate exactly max_tokens (extension field ignore_eos)."),
    click.option("--temperature", envvar="LLMQ_LOADTEST_TEMPERATURE", type=float, default=0.0, show_default=True),
    click.option("--tokenizer", envvar="LLMQ_LOADTEST_TOKENIZER", default=None,
                 help="Folder with tokenizer.json for exact prompt lengths. Default: the local model of that name, if any."),
    click.option("--request-timeout", envvar="LLMQ_LOADTEST_REQUEST_TIMEOUT", type=float, default=600.0, show_default=True),
    click.option("--drain", envvar="LLMQ_LOADTEST_DRAIN", type=float, default=120.0, show_default=True,
                 help="Seconds in-flight requests get to finish at the end."),
    click.option("--warmup", envvar="LLMQ_LOADTEST_WARMUP", type=click.FloatRange(min=0), default=0.0, show_default=True,
                 help="Seconds at the start whose requests the summary leaves out."),
]

STACK_OPTIONS = [
    click.option("--up-arg", "up_args", envvar="LLMQ_LOADTEST_UP_ARGS", multiple=True,
                 help="Passed on to `llmq up`, one word each: --up-arg=--workers --up-arg=2."),
    click.option("--ready-timeout", envvar="LLMQ_LOADTEST_READY_TIMEOUT", type=float, default=600.0, show_default=True,
                 help="Seconds to wait for the local stack's /ready."),
]


def with_options(options):
    def decorate(command):
        return functools.reduce(lambda cmd, option: option(cmd), reversed(options), command)

    return decorate


def build_config(url: str, out: str | None, **o) -> RunConfig:
    prompt = PromptConfig(mix=o["mix"], prompt_tokens=o["prompt_tokens"], output_tokens=o["output_tokens"],
                          system_prompts=o["system_prompts"], system_tokens=o["system_tokens"], seed=o["seed"])
    config = RunConfig(
        url=url, out=out or time.strftime("out/loadtest-%Y%m%d-%H%M%S"), model=o["model"], api_key=o["api_key"],
        prompt=prompt, shape=o["shape"], users=o["users"], duration_s=o["duration"], stage_s=o["stage_duration"],
        ramp_start=o["ramp_start"], ramp_step=o["ramp_step"], ignore_eos=o["ignore_eos"],
        temperature=o["temperature"], tokenizer=o["tokenizer"], request_timeout_s=o["request_timeout"],
        drain_s=o["drain"], warmup_s=o["warmup"],
    )
    try:
        config.load_shape()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    return config


@contextlib.contextmanager
def clean_errors():
    """A server that is not there, or a stack that does not start, is one line, not a traceback."""
    import openai

    try:
        yield
    except (RuntimeError, TimeoutError, OSError, openai.APIError) as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from None


def _stop_on_sigterm() -> None:
    """SIGTERM (a job's timeout) unwinds like Ctrl-C, so the running stack is stopped, not orphaned."""
    import signal

    def interrupt(signum, _frame) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


@click.group()
def loadtest() -> None:
    """Locust load tests against any OpenAI-compatible URL, or a local stack."""


@loadtest.command()
@click.option("--url", envvar="LLMQ_LOADTEST_URL", default=None, help="OpenAI-compatible base URL, e.g. http://host:8000/v1.")
@click.option("--local", is_flag=True, envvar="LLMQ_LOADTEST_LOCAL", help="Start `llmq up` on a free port for the run.")
@with_options(STACK_OPTIONS)
@with_options(LOAD_OPTIONS)
def run(url, local, up_args, ready_timeout, out, **options) -> None:
    """A headless run: Locust CSV and HTML, summary.json and plots in --out."""
    from loadtests.run import run_load
    from loadtests.stack import LocalStack

    if bool(url) == bool(local):
        raise click.UsageError("give exactly one of --url and --local")
    config = build_config(url or "", out, **options)
    _stop_on_sigterm()
    with clean_errors():
        if local:
            Path(config.out).mkdir(parents=True, exist_ok=True)
            with LocalStack(up_args, Path(config.out), ready_timeout) as stack:
                summary = run_load(config.with_out(config.out, url=stack.url))
        else:
            summary = run_load(config)
    failed = summary["failed"] + summary["warmup"]["failed"]
    if failed:
        # Like Locust itself: the report is written, and the exit status says requests failed.
        total = summary["requests"] + summary["warmup"]["requests"]
        raise click.ClickException(f"{failed} of {total} requests failed; see {config.out}")


@loadtest.command()
@click.option("--backends", envvar="LLMQ_LOADTEST_BACKENDS", default="hf,torch", show_default=True,
              help="Engine backends, baseline first; each gets its own `llmq up --backend X`.")
@with_options(STACK_OPTIONS)
@with_options(LOAD_OPTIONS)
def compare(backends, up_args, ready_timeout, out, **options) -> None:
    """The same load against each backend in turn, and the seed's table; writes compare.json."""
    from loadtests.compare import format_table, run_compare

    names = [name.strip() for name in backends.split(",") if name.strip()]
    if not names:
        raise click.UsageError("--backends names no backend")
    config = build_config("", out, **options)
    _stop_on_sigterm()
    with clean_errors():
        result = run_compare(config, names, tuple(up_args), ready_timeout)
    prompt = config.prompt
    click.echo(f"load: {config.load_shape().kind}, up to {config.users} users, {prompt.mix} prompts of"
               f" {prompt.prompt_tokens} tokens, max_tokens {prompt.output_tokens}")
    click.echo(format_table(result["rows"]))
    click.echo(f"compare.json and per-backend reports in {config.out}", file=sys.stderr)
    broken = {name: s["error"] for name, s in result["summaries"].items() if "error" in s}
    if broken:
        raise click.ClickException("; ".join(f"{name}: {error}" for name, error in broken.items()))

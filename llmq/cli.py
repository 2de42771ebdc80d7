"""The `llmq` command. Each subcommand's module is imported only when it runs,
so `llmq gateway` never loads torch."""

from __future__ import annotations

import click

from llmq.lazy import LazyGroup

# name -> "module:click_command"; the module owns its options (each with an LLMQ_ env var).
COMMANDS = {
    "up": "llmq.up:up",
    "gateway": "api.cli:gateway",
    "keys": "api.cli:keys",
    "worker": "workers.cli:worker",
    "models": "engine.cli:models",
    "bench": "llmq.bench:bench",
    "loadtest": "loadtests.cli:loadtest",
}

SUMMARIES = {
    "up": "Run the whole stack locally: Redis, one worker, the gateway.",
    "gateway": "Run the OpenAI-compatible HTTP gateway.",
    "keys": "Create, list and revoke API keys.",
    "worker": "Run a Celery worker that holds one inference engine.",
    "models": "Fetch and convert models.",
    "bench": "Benchmarks that print numbers.",
    "loadtest": "Locust load tests against any OpenAI-compatible URL.",
}


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    summaries=SUMMARIES,
    context_settings={"help_option_names": ["-h", "--help"]},
)
def main() -> None:
    """llmq: an OpenAI-compatible LLM server with a Redis queue and batched GPU workers."""


if __name__ == "__main__":
    main()

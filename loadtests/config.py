"""Settings of one load-test run, frozen; the CLI builds it, the driver process reads it
back from JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from loadtests import shapes
from loadtests.prompts import Length, PromptConfig


@dataclass(frozen=True)
class RunConfig:
    url: str  # OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1
    out: str  # report folder
    model: str = ""  # empty: the first model the server lists
    api_key: str = "none"
    prompt: PromptConfig = field(default_factory=PromptConfig)
    shape: str = "fixed"
    users: int = 4  # fixed users, or the top of a ramp or sweep
    duration_s: float = 60.0  # for the fixed shape
    stage_s: float = 30.0  # for ramp and sweep stages
    ramp_start: int = 1
    ramp_step: int = 1
    ignore_eos: bool = True
    temperature: float = 0.0
    tokenizer: str | None = None  # a folder with tokenizer.json for exact prompt lengths
    request_timeout_s: float = 600.0
    drain_s: float = 120.0  # at the end, in-flight requests get this long to finish
    warmup_s: float = 0.0  # requests sent this early are left out of the summary's numbers

    def load_shape(self) -> shapes.LoadShape:
        return shapes.build(self.shape, self.users, self.duration_s, self.stage_s, self.ramp_start, self.ramp_step)

    def with_out(self, out: str | Path, **changes) -> "RunConfig":
        return replace(self, out=str(out), **changes)

    def to_json(self) -> str:
        data = asdict(self)
        data["prompt"]["prompt_tokens"] = str(self.prompt.prompt_tokens)
        data["prompt"]["output_tokens"] = str(self.prompt.output_tokens)
        return json.dumps(data, indent=2)

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        data = json.loads(text)
        prompt = data.pop("prompt")
        prompt["prompt_tokens"] = Length.parse(prompt["prompt_tokens"])
        prompt["output_tokens"] = Length.parse(prompt["output_tokens"])
        return cls(prompt=PromptConfig(**prompt), **data)

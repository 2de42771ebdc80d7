"""POST /v1/chat/completions and POST /v1/completions."""

from __future__ import annotations

import anyio.to_thread
from litestar import Controller, Request, post
from litestar.datastructures import State
from litestar.params import JSONBody

from api.plan import plan_chat, plan_completion
from api.schemas import ChatCompletion, ChatCompletionRequest, Completion, CompletionRequest
from api.serve import serve

# Rendering and tokenizing a long prompt is CPU work: past this many characters it leaves the event loop.
INLINE_TOKENIZE_CHARS = 4096
DEADLINE_DOC = (
    "OpenAI's request body. A request may set its own deadline with the `X-Request-Timeout` header "
    "(seconds; default: the gateway's --request-timeout). Past it the request is aborted in the worker and "
    "answered 504 (or, mid-stream, with an error event). Fields this server does not honour are a 400 "
    "naming them."
)


def _prompt_chars(request: ChatCompletionRequest | CompletionRequest) -> int:
    if isinstance(request, CompletionRequest):
        prompt = request.prompt
        return len(prompt) if isinstance(prompt, str) else sum(len(p) if isinstance(p, str) else 1 for p in prompt)
    total = 0
    for message in request.messages:
        content = message.content
        total += len(content) if isinstance(content, str) else sum(len(p.text or "") for p in content or [])
    return total


async def _plan(planner, data, gateway):
    limits = gateway.watch.context_limits()
    if _prompt_chars(data) <= INLINE_TOKENIZE_CHARS:
        return planner(data, gateway.models, limits)
    return await anyio.to_thread.run_sync(planner, data, gateway.models, limits)


class GenerateController(Controller):
    path = "/v1"
    tags = ["generation"]

    @post("/chat/completions", operation_id="createChatCompletion", status_code=200,
          summary="Chat completion, streamed as SSE when `stream` is true", description=DEADLINE_DOC)
    async def chat(self, data: JSONBody[ChatCompletionRequest], request: Request, state: State) -> ChatCompletion:
        gateway = state.gateway
        plan = await _plan(plan_chat, data, gateway)
        return await serve(plan, request, gateway, "chat")

    @post("/completions", operation_id="createCompletion", status_code=200,
          summary="Text completion, streamed as SSE when `stream` is true", description=DEADLINE_DOC)
    async def completions(self, data: JSONBody[CompletionRequest], request: Request, state: State) -> Completion:
        gateway = state.gateway
        plan = await _plan(plan_completion, data, gateway)
        return await serve(plan, request, gateway, "completions")

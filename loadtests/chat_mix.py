"""A realistic chat mix: short questions, summaries of long text, multi-turn conversations
and long answers, in the proportions a chat assistant tends to see."""

from __future__ import annotations

from dataclasses import dataclass

from loadtests.prompts import ChatRequest, Length, RequestFactory


@dataclass(frozen=True)
class ChatKind:
    name: str
    weight: float
    prompt: Length  # tokens of the user's text (plus history for multi-turn)
    output: Length
    instruction: str
    turns: Length = Length(0, 0)  # earlier user/assistant pairs


KINDS = (
    ChatKind("qa", 0.45, Length(20, 120), Length(40, 250), "Answer briefly, based on this passage:"),
    ChatKind("summarize", 0.20, Length(400, 1200), Length(80, 200), "Summarize the following text:"),
    ChatKind("conversation", 0.25, Length(40, 150), Length(60, 300), "And what about this part?", Length(1, 3)),
    ChatKind("long_answer", 0.10, Length(20, 60), Length(300, 600), "Write a detailed explanation of:"),
)


def chat_request(factory: RequestFactory) -> ChatRequest:
    rng = factory.rng
    kind = rng.choices(KINDS, weights=[k.weight for k in KINDS])[0]
    messages = factory.system_messages()
    for _ in range(kind.turns.draw(rng)):
        messages.append({"role": "user", "content": factory.text.passage(kind.prompt.draw(rng))})
        messages.append({"role": "assistant", "content": factory.text.passage(kind.output.draw(rng) // 2)})
    user_text = f"{kind.instruction}\n\n{factory.text.passage(kind.prompt.draw(rng))}"
    messages.append({"role": "user", "content": user_text})
    return factory.finish(messages, kind.output.draw(rng), kind.name)

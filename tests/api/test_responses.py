"""Chunk and body shapes, as OpenAI writes them."""

import msgspec

from api.generation import Delta
from api.responses import ChunkMaker, WholeResponse
from api.schemas import Usage
from workers.protocol import TokenLogprobWire


def as_json(obj) -> dict:
    return msgspec.json.decode(msgspec.json.encode(obj))


def test_chat_chunks(tokenizer):
    maker = ChunkMaker("chat", "chatcmpl-1", 123, tokenizer, top_n=1, include_usage=False)
    role = as_json(maker.role(0))
    assert role["object"] == "chat.completion.chunk" and "usage" not in role
    assert role["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                "finish_reason": None}]
    text = as_json(maker.delta(Delta(0, "Hi")))["choices"][0]
    assert text["delta"] == {"content": "Hi"} and text["finish_reason"] is None
    end = as_json(maker.delta(Delta(0, "", finish_reason="length")))["choices"][0]
    assert end["delta"] == {} and end["finish_reason"] == "length"


def test_usage_field_only_with_include_usage(tokenizer):
    maker = ChunkMaker("completion", "cmpl-1", 1, tokenizer, top_n=0, include_usage=True)
    chunk = as_json(maker.delta(Delta(2, "x")))
    assert chunk["object"] == "text_completion" and chunk["usage"] is None
    assert chunk["choices"][0] == {"index": 2, "text": "x", "logprobs": None, "finish_reason": None}
    final = as_json(maker.usage(Usage(3, 4, 7)))
    assert final["choices"] == [] and final["usage"]["total_tokens"] == 7


def test_completion_logprobs_offsets(tokenizer):
    ids = tokenizer.encode("Hello world")
    wire = [TokenLogprobWire(i, -0.25, [(i, -0.25)]) for i in ids]
    whole = WholeResponse("completion", [0])
    whole.add(Delta(0, "Hello world", wire, "stop"))
    body = as_json(whole.build("cmpl-2", 1, tokenizer, True, 1, Usage(1, len(ids), 1 + len(ids))))
    logprobs = body["choices"][0]["logprobs"]
    assert "".join(logprobs["tokens"]) == "Hello world"
    assert logprobs["text_offset"] == [0, len(logprobs["tokens"][0])]
    assert logprobs["token_logprobs"] == [-0.25, -0.25] and logprobs["top_logprobs"][1] == {" world": -0.25}

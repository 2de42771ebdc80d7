"""The load generator's reading of a chat-completions stream, on hand-written SSE lines."""

import openai
import pytest

from loadtests.sse import STREAM_ERROR, chat_chunks, sse_data


def test_events_are_split_on_blank_lines_and_data_lines_joined():
    lines = [": keep-alive", "", "data: {\"a\": 1}", "", "event: x", "data:one", "data: two", "", "data: last"]
    assert list(sse_data(lines)) == ['{"a": 1}', "one\ntwo", "last"]


def test_chunks_end_at_done_and_keep_usage():
    lines = ['data: {"choices": [{"delta": {"content": "hi"}}]}', "",
             'data: {"choices": [], "usage": {"completion_tokens": 1}}', "", "data: [DONE]", "",
             'data: {"after": "done"}', ""]
    assert list(chat_chunks(lines)) == [{"choices": [{"delta": {"content": "hi"}}]},
                                       {"choices": [], "usage": {"completion_tokens": 1}}]


@pytest.mark.parametrize("error, message", [({"message": "worker died", "code": 500}, "worker died"),
                                            ({"code": 500}, STREAM_ERROR), ("boom", STREAM_ERROR)])
def test_an_error_event_raises_like_the_openai_client(error, message):
    import json

    lines = ['data: {"choices": [{"delta": {"content": "a"}}]}', "", "data: " + json.dumps({"error": error}), ""]
    chunks = chat_chunks(lines)
    assert next(chunks)["choices"][0]["delta"]["content"] == "a"
    with pytest.raises(openai.APIError) as raised:
        next(chunks)
    assert raised.value.message == message and raised.value.body == error


def test_data_that_is_not_json_is_an_error():
    with pytest.raises(ValueError):
        list(chat_chunks(["data: {not json", ""]))

"""The real SmolLM2 behind the real stack (Redis, two `llmq worker --backend torch`, the gateway), driven
by the openai client; answers are checked against the same engine run in this process."""

import signal

import pytest

from engine.backends import create_engine
from engine.config import EngineConfig
from engine.types import SamplingParams
from llmq.stack import LocalStack
from tests.integration.helpers import client_for, leases, wait_for

pytestmark = pytest.mark.integration

ENGINE_ARGS = dict(device="cpu", kv_cache_tokens=4096, num_threads=1, max_num_seqs=4)
QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


@pytest.fixture(scope="module")
def stack(model_dir, tmp_path_factory):
    worker_extra = ("--device", "cpu", "--kv-cache-tokens", "4096", "--num-threads", "1", "--concurrency", "4")
    with LocalStack(model=str(model_dir), backend="torch", workers=2, worker_extra=worker_extra,
                    log_dir=tmp_path_factory.mktemp("torch-stack")) as running:
        yield running


@pytest.fixture(scope="module")
def client(stack):
    return client_for(stack)


@pytest.fixture(scope="module")
def reference(model_dir):
    """Greedy answer of the in-process engine: (prompt ids, output ids, text)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    engine = create_engine("torch", EngineConfig(model=str(model_dir), **ENGINE_ARGS))
    cache = {}

    def answer(messages, max_tokens):
        key = (str(messages), max_tokens)
        if key not in cache:
            prompt = list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                        return_dict=False))
            engine.add_request("ref", prompt, SamplingParams(max_tokens=max_tokens, temperature=0.0))
            output = []
            while engine.has_unfinished():
                for step in engine.step():
                    output += step.new_token_ids
            cache[key] = (prompt, output, tokenizer.decode(output, skip_special_tokens=True))
        return cache[key]

    return answer


def test_non_streamed_greedy_answer_and_usage_match_the_engine(client, reference):
    prompt, output, text = reference(QUESTION, 24)
    reply = client.chat.completions.create(model="SmolLM2-135M-Instruct", messages=QUESTION, max_tokens=24,
                                           temperature=0)
    assert reply.choices[0].message.content == text
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (len(prompt), len(output))
    assert reply.usage.total_tokens == len(prompt) + len(output)


def _stream(client, **kwargs):
    chunks = list(client.chat.completions.create(model="SmolLM2-135M-Instruct", messages=QUESTION,
                                                 temperature=0, stream=True, **kwargs))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return chunks, text


def test_streamed_greedy_answer_matches_and_include_usage_adds_one_usage_chunk(client, reference):
    prompt, output, text = reference(QUESTION, 24)
    plain, plain_text = _stream(client, max_tokens=24)
    with_usage, usage_text = _stream(client, max_tokens=24, stream_options={"include_usage": True})
    assert plain_text == usage_text == text
    assert not [c for c in plain if c.usage]
    usage_chunks = [c for c in with_usage if c.usage]
    assert len(usage_chunks) == 1 and usage_chunks[0] is with_usage[-1] and usage_chunks[0].choices == []
    assert (usage_chunks[0].usage.prompt_tokens, usage_chunks[0].usage.completion_tokens) == (len(prompt), len(output))


def test_n_2_gives_two_choices(client, reference):
    _, output, text = reference(QUESTION, 16)
    reply = client.chat.completions.create(model="SmolLM2-135M-Instruct", messages=QUESTION, max_tokens=16,
                                           temperature=0, n=2)
    assert sorted(c.index for c in reply.choices) == [0, 1]
    assert [c.message.content for c in reply.choices] == [text, text]
    assert reply.usage.completion_tokens == 2 * len(output)


@pytest.mark.parametrize("stream", [False, True])
def test_a_stop_string_ends_the_answer_without_appearing(client, reference, stream):
    _, _, text = reference(QUESTION, 24)
    cut = len(text) // 2
    stop = text[cut:cut + 4]
    before = text[: text.index(stop)]
    kwargs = dict(model="SmolLM2-135M-Instruct", messages=QUESTION, max_tokens=24, temperature=0, stop=[stop])
    if stream:
        chunks = list(client.chat.completions.create(stream=True, **kwargs))
        content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    else:
        choice = client.chat.completions.create(**kwargs).choices[0]
        content, finish = choice.message.content, [choice.finish_reason]
    assert content == before and stop not in content
    assert finish == ["stop"]


def test_killing_the_worker_mid_stream_loses_and_repeats_no_token(stack, client, reference):
    _, output, text = reference(QUESTION, 64)
    stream = client.chat.completions.create(model="SmolLM2-135M-Instruct", messages=QUESTION, max_tokens=64,
                                            temperature=0, stream=True, stream_options={"include_usage": True})
    received, usage, killed = [], None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        if chunk.choices and chunk.choices[0].delta.content:
            received.append(chunk.choices[0].delta.content)
        if killed is None and len(received) >= 3:
            [worker_id] = wait_for(lambda: set(leases(stack.redis.url).values()), 5, "the lease of the request")
            victim = next(c for c in stack.children if c.name == worker_id)
            victim.signal(signal.SIGKILL)
            killed = victim.process.wait()
    assert killed is not None, "the answer ended before a worker could be killed"
    assert "".join(received) == text
    assert usage.completion_tokens == len(output)

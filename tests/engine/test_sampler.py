"""Sampler logic on hand-made logits."""

import math

import torch

from engine.sampler import Sampler, apply_penalties, apply_top_k_top_p, uniform_for
from engine.sequence import Sequence
from engine.types import SamplingParams

VOCAB = 50


def seq(request_id="r", prompt=(1, 2, 3), output=(), **params):
    s = Sequence(request_id, list(prompt), SamplingParams(**params), arrival=0)
    s.token_ids.extend(output)
    return s


def random_logits(rows, seed=0):
    return torch.randn(rows, VOCAB, generator=torch.Generator().manual_seed(seed)) * 3


def sample(logits, seqs, base_seed=0):
    return Sampler(torch.device("cpu"), base_seed)(logits.clone(), seqs)


def test_greedy_takes_the_argmax():
    logits = random_logits(3)
    tokens = sample(logits, [seq(temperature=0.0) for _ in range(3)])
    assert [t.token_id for t in tokens] == logits.argmax(-1).tolist()
    assert all(t.logprob is None for t in tokens)


def test_greedy_ties_go_to_the_first_index_like_argmax():
    logits = random_logits(2)
    logits[0, [7, 3, 40]] = 100.0
    logits[1] = 0.0
    tokens = sample(logits, [seq(temperature=0.0), seq(temperature=0.0)])
    assert [t.token_id for t in tokens] == [3, 0] == logits.argmax(-1).tolist()


def test_greedy_rows_go_through_the_argmax_entry_point(monkeypatch):
    # On CUDA, kernels.use_triton() puts the Triton argmax there; the CPU keeps the torch one.
    from engine import kernels
    from engine.kernels import reference

    seen = []

    def recording_argmax(logits, out=None):
        seen.append(tuple(logits.shape))
        return reference.argmax(logits, out)

    monkeypatch.setattr(kernels, "argmax", recording_argmax)
    logits = random_logits(3)
    tokens = sample(logits, [seq(temperature=0.0) for _ in range(3)])
    assert seen == [(3, VOCAB)] and [t.token_id for t in tokens] == logits.argmax(-1).tolist()
    sample(logits[:2], [seq(temperature=0.0), seq(temperature=1.0)])  # a mixed batch: the greedy row too
    assert seen[1:] == [(2, VOCAB)]


def test_ids_are_sampled_into_the_given_buffer():
    """The runner's buffer, where the next step looks its pending tokens up: greedy, drawn and
    mixed rows all land there, and the host copy holds them even after the buffer is reused."""
    logits = random_logits(3)
    buffer = torch.full((5,), -9, dtype=torch.int64)
    seqs = [seq(temperature=0.0), seq(temperature=1.0, seed=4), seq(temperature=0.0)]
    sampled = Sampler(torch.device("cpu")).launch(logits.clone(), seqs, out=buffer[:3])
    expected = [t.token_id for t in sample(logits, seqs)]
    assert buffer[:3].tolist() == expected and buffer[3:].tolist() == [-9, -9]
    greedy = Sampler(torch.device("cpu")).launch(logits[:2].clone(), seqs[::2][:2], out=buffer[:2])
    buffer.fill_(-9)  # the next step samples into the same buffer before these are read
    assert [t.token_id for t in sampled.result()] == expected
    assert [t.token_id for t in greedy.result()] == logits[:2].argmax(-1).tolist()


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0], [1.0, 5.0, 3.0, 4.0, 2.0]])
    filtered = apply_top_k_top_p(logits, [2, 5], [1.0, 1.0])
    assert torch.isinf(filtered[0]).tolist() == [True, False, True, False, True]
    assert not torch.isinf(filtered[1]).any()


def test_top_p_keeps_the_smallest_nucleus_reaching_p():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3], [0.05, 0.5, 0.15, 0.3]])
    filtered = apply_top_k_top_p(probs.log(), [4, 1], [0.7, 1.0])
    # 0.5 alone is below 0.7, 0.5 + 0.3 reaches it: the rest goes.
    assert torch.isinf(filtered[0]).tolist() == [True, False, True, False]
    # Top-k 1 in the second row, with top-p off.
    assert torch.isinf(filtered[1]).tolist() == [True, False, True, True]


def test_sampled_tokens_stay_inside_the_filters():
    logits = random_logits(1)
    allowed = set(logits[0].topk(3).indices.tolist())
    for i in range(40):
        (token,) = sample(logits, [seq(request_id=f"r{i}", temperature=1.5, top_k=3)])
        assert token.token_id in allowed
    (token,) = sample(logits, [seq(temperature=1.0, top_k=1)])
    assert token.token_id == logits.argmax().item()


def test_draws_follow_the_distribution():
    probs = torch.tensor([0.6, 0.3, 0.1])
    counts = torch.zeros(3)
    for position in range(3000):
        u = uniform_for(seed=7, position=position)
        counts[int(torch.searchsorted(probs.cumsum(0), torch.tensor(u), right=True))] += 1
    assert torch.allclose(counts / counts.sum(), probs, atol=0.03)


def test_seeded_draw_does_not_depend_on_the_batch():
    logits = random_logits(4)
    alone = [
        sample(logits[i : i + 1], [seq(request_id=f"r{i}", seed=11 + i, temperature=1.0)])[0].token_id for i in range(4)
    ]
    together = sample(logits, [seq(request_id=f"x{i}", seed=11 + i, temperature=1.0) for i in range(4)])
    assert [t.token_id for t in together] == alone
    reordered = sample(logits.flip(0), [seq(seed=11 + i, temperature=1.0) for i in reversed(range(4))])
    assert [t.token_id for t in reordered] == alone[::-1]


def test_seed_and_position_pick_the_number():
    flat = torch.zeros(1, VOCAB)  # uniform distribution: the token is the uniform number's bucket
    draws = {sample(flat, [seq(seed=s, temperature=1.0)])[0].token_id for s in range(30)}
    assert len(draws) > 10
    later = seq(seed=3, temperature=1.0, output=(5,))  # one token further along
    assert uniform_for(3, later.num_tokens) != uniform_for(3, later.num_tokens - 1)


def test_unseeded_requests_get_a_seed_from_their_id():
    sampler = Sampler(torch.device("cpu"), base_seed=0)
    assert sampler.seed_of(seq(request_id="a")) == sampler.seed_of(seq(request_id="a"))
    assert sampler.seed_of(seq(request_id="a")) != sampler.seed_of(seq(request_id="b"))
    assert sampler.seed_of(seq(request_id="a", seed=5)) == 5
    other_engine = Sampler(torch.device("cpu"), base_seed=1)
    assert other_engine.seed_of(seq(request_id="a")) != sampler.seed_of(seq(request_id="a"))


def test_repetition_penalty_scales_seen_tokens():
    logits = torch.tensor([[2.0, -2.0, 2.0, -2.0, 1.0]])
    apply_penalties(logits, [seq(prompt=(0,), output=(1,), repetition_penalty=2.0)])
    assert logits.tolist() == [[1.0, -4.0, 2.0, -2.0, 1.0]]


def test_presence_and_frequency_penalise_output_tokens_only():
    logits = torch.zeros(2, 5)
    apply_penalties(logits, [seq(prompt=(4,), output=(1, 1, 2), presence_penalty=0.5, frequency_penalty=0.25), seq()])
    assert logits[0].tolist() == [0.0, -1.0, -0.75, 0.0, 0.0]
    assert logits[1].tolist() == [0.0] * 5


def test_greedy_respects_penalties():
    logits = torch.tensor([[3.0, 2.0, 0.0]])
    (token,) = sample(logits, [seq(prompt=(0,), temperature=0.0, repetition_penalty=2.0)])
    assert token.token_id == 1


def test_logprobs_are_the_temperature_scaled_log_softmax():
    logits = random_logits(2)
    tokens = sample(logits, [seq(temperature=0.5, seed=1, logprobs=3), seq(temperature=0.0, logprobs=0)])
    expected = torch.log_softmax(logits[0] / 0.5, dim=-1)
    first = tokens[0].logprob
    assert first.token_id == tokens[0].token_id
    assert math.isclose(first.logprob, expected[first.token_id].item(), rel_tol=1e-5)
    assert [t for t, _ in first.top] == expected.topk(3).indices.tolist()
    assert all(a[1] >= b[1] for a, b in zip(first.top, first.top[1:]))
    second = tokens[1].logprob
    assert second.top == [] and second.token_id == logits[1].argmax().item()
    assert math.isclose(second.logprob, torch.log_softmax(logits[1], -1).max().item(), rel_tol=1e-5)

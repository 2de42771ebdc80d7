"""The torch reference kernels against naive, obviously-correct versions on random inputs."""

import math

import pytest
import torch

from engine.attention_metadata import pending_input_id
from engine.kernels import reference


def scatter_into_cache(keys, block_table, block_size, k_cache):
    """Place a sequence's per-position K [L, Hkv, D] in the paged cache through its block table."""
    for pos in range(keys.shape[0]):
        k_cache[block_table[pos // block_size], pos % block_size] = keys[pos]


def naive_attention(q, k, v, scale):
    """q [Lq, Hq, D] at the last Lq positions of k, v [L, Hkv, D]; causal; GQA by repetition."""
    q_len, num_heads, _ = q.shape
    kv_len, num_kv_heads, _ = k.shape
    group = num_heads // num_kv_heads
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    out = torch.empty_like(q)
    for i in range(q_len):
        pos = kv_len - q_len + i
        scores = torch.einsum("hd,lhd->hl", q[i], k[: pos + 1]) * scale  # [Hq, pos+1]
        out[i] = torch.einsum("hl,lhd->hd", scores.softmax(-1), v[: pos + 1])
    return out


def make_batch(query_lens, seq_lens, num_heads, num_kv_heads, head_dim, block_size, num_blocks, seed, shuffle=True):
    """A paged cache holding every sequence, with block tables that interleave blocks of all sequences
    (or, unshuffled, give each sequence consecutive blocks)."""
    gen = torch.Generator().manual_seed(seed)
    k_cache = torch.zeros(num_blocks, block_size, num_kv_heads, head_dim)
    v_cache = torch.zeros_like(k_cache)
    free = torch.randperm(num_blocks, generator=gen).tolist() if shuffle else list(range(num_blocks))[::-1]
    max_blocks = max(-(-s // block_size) for s in seq_lens)
    block_tables = torch.zeros(len(seq_lens), max_blocks, dtype=torch.int32)
    keys, values = [], []
    for b, seq_len in enumerate(seq_lens):
        table = [free.pop() for _ in range(-(-seq_len // block_size))]
        block_tables[b, : len(table)] = torch.tensor(table, dtype=torch.int32)
        keys.append(torch.randn(seq_len, num_kv_heads, head_dim, generator=gen))
        values.append(torch.randn(seq_len, num_kv_heads, head_dim, generator=gen))
        scatter_into_cache(keys[-1], table, block_size, k_cache)
        scatter_into_cache(values[-1], table, block_size, v_cache)
    q = torch.randn(sum(query_lens), num_heads, head_dim, generator=gen)
    query_start_loc = torch.tensor([0, *torch.tensor(query_lens).cumsum(0).tolist()], dtype=torch.int32)
    return q, k_cache, v_cache, block_tables, torch.tensor(seq_lens, dtype=torch.int32), query_start_loc, keys, values


@pytest.mark.parametrize(
    "query_lens, seq_lens, num_heads, num_kv_heads",
    [
        ([1], [37], 6, 2),  # a lone decode
        ([9], [50], 6, 2),  # a lone chunk continuing a cached prefix
        ([1, 1, 1], [1, 17, 40], 4, 4),  # decode only, block boundary at 16/17
        ([1, 1, 1, 1], [16, 32, 5, 33], 9, 3),  # decode only, GQA, exact block ends
        ([7, 20, 1], [7, 20, 1], 8, 2),  # fresh prefills
        ([1, 1, 5, 16], [30, 3, 21, 48], 6, 2),  # mixed: decodes, then chunks continuing a cached prefix
        ([3, 0, 2], [19, 4, 2], 4, 1),  # a sequence with no query this step, MQA
    ],
)
@pytest.mark.parametrize("shuffle", [True, False], ids=["scattered-blocks", "consecutive-blocks"])
def test_paged_attention_matches_naive(query_lens, seq_lens, num_heads, num_kv_heads, shuffle):
    head_dim, block_size = 16, 16
    q, k_cache, v_cache, block_tables, seq_lens_t, qsl, keys, values = make_batch(
        query_lens, seq_lens, num_heads, num_kv_heads, head_dim, block_size, num_blocks=24, seed=0, shuffle=shuffle
    )
    scale = 1 / math.sqrt(head_dim)
    out = reference.paged_attention(q, k_cache, v_cache, block_tables, seq_lens_t, qsl, scale, max(query_lens))
    for b, q_len in enumerate(query_lens):
        begin = int(qsl[b])
        expected = naive_attention(q[begin : begin + q_len], keys[b], values[b], scale)
        torch.testing.assert_close(out[begin : begin + q_len], expected, atol=1e-5, rtol=1e-5)


def test_write_kv_lands_in_slots():
    k_cache = torch.zeros(4, 8, 2, 4)
    v_cache = torch.zeros_like(k_cache)
    k, v = torch.randn(3, 2, 4), torch.randn(3, 2, 4)
    slots = torch.tensor([0, 13, 31])  # block 0 offset 0, block 1 offset 5, block 3 offset 7
    reference.write_kv(k, v, k_cache, v_cache, slots)
    torch.testing.assert_close(k_cache[1, 5], k[1])
    torch.testing.assert_close(v_cache[3, 7], v[2])
    assert k_cache.abs().sum() == pytest.approx(k.abs().sum().item())


def test_rms_norm_with_residual():
    x, residual, weight = torch.randn(5, 32), torch.randn(5, 32), torch.randn(32)
    out, new_residual = reference.rms_norm(x, weight, 1e-6, residual)
    summed = x + residual
    expected = summed / torch.sqrt(summed.pow(2).mean(-1, keepdim=True) + 1e-6) * weight
    torch.testing.assert_close(new_residual, summed)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(reference.rms_norm(summed, weight, 1e-6), expected)


def test_rotary_rotates_halves_by_position_angle():
    head_dim, positions = 8, torch.tensor([0, 3])
    inv_freq = 1.0 / 10000 ** (torch.arange(0, head_dim, 2).float() / head_dim)
    angles = torch.outer(torch.arange(10).float(), inv_freq)  # [P, D/2]
    cache = torch.cat((angles.cos(), angles.sin()), dim=-1)
    q, k = torch.randn(2, 3, head_dim), torch.randn(2, 1, head_dim)
    q_rot, k_rot = reference.rotary(q, k, positions, cache)
    torch.testing.assert_close(q_rot[0], q[0])  # position 0 is the identity
    # Pair (i, i + D/2) is a 2-D vector rotated by angle pos * inv_freq[i].
    theta = 3 * inv_freq
    x1, x2 = k[1, 0, :4], k[1, 0, 4:]
    torch.testing.assert_close(k_rot[1, 0, :4], x1 * theta.cos() - x2 * theta.sin())
    torch.testing.assert_close(k_rot[1, 0, 4:], x2 * theta.cos() + x1 * theta.sin())


def test_silu_and_mul():
    x = torch.randn(3, 10)
    torch.testing.assert_close(reference.silu_and_mul(x), torch.nn.functional.silu(x[:, :5]) * x[:, 5:])


def test_linear_widens_into_a_given_out():
    x, weight, bias = torch.randn(3, 16).bfloat16(), torch.randn(8, 16).bfloat16(), torch.randn(8).bfloat16()
    out = torch.full((3, 8), float("nan"))  # float32, as the LM head's logits
    assert reference.linear(x, weight, bias, out=out) is out
    torch.testing.assert_close(out, torch.nn.functional.linear(x, weight, bias).float(), atol=0, rtol=0)
    assert reference.linear(x, weight).dtype == torch.bfloat16


def naive_argmax(row: torch.Tensor) -> int:
    """torch.max(dim)'s pick, written out: the first NaN if any, else the first maximal entry."""
    values = row.tolist()
    nans = [i for i, v in enumerate(values) if math.isnan(v)]
    return nans[0] if nans else values.index(max(values))  # index(): -0.0 == 0.0, a tie


def test_embedding_looks_pending_ids_up_in_the_last_steps_ids():
    weight = torch.randn(10, 4)
    pending = torch.tensor([7, 2, 9])  # the last step's sampled ids, by row
    ids = torch.tensor([3, pending_input_id(2), 0, pending_input_id(0)])
    out = reference.embedding(ids, weight, pending)
    assert torch.equal(out, weight[[3, 9, 0, 7]])
    assert torch.equal(reference.embedding(ids[[0, 2]], weight), weight[[3, 0]])  # no buffer: plain ids


def test_argmax_is_the_first_index_of_the_maximum_nan_first():
    # The contract the Triton argmax is tested against on CUDA.
    rows = torch.randn(8, 300, generator=torch.Generator().manual_seed(0))
    rows[0, [250, 40]] = 9.0  # a tie: the smaller index
    rows[1] = float("-inf")  # every entry masked: index 0
    rows[2, :200] = float("-inf")
    rows[3, [280, 120]] = float("nan")  # the first NaN, above every number
    rows[4, 0], rows[4, 299] = float("inf"), -float("nan")
    rows[5] = -1.0
    rows[5, [290, 17]] = torch.tensor([0.0, -0.0])  # -0.0 ties with 0.0
    rows[6] = 0.5
    expected = [naive_argmax(row) for row in rows]
    assert reference.argmax(rows).tolist() == expected
    assert expected[:7] == [40, 0, expected[2], 120, 299, 17, 0] and expected[2] >= 200


def test_lone_sequence_attention_reads_consecutive_slots():
    head_dim, block_size, seq_len = 16, 16, 37
    q, k_cache, v_cache, _, _, _, keys, values = make_batch(
        [1], [seq_len], 6, 2, head_dim, block_size, num_blocks=24, seed=1, shuffle=False
    )
    scale = 1 / math.sqrt(head_dim)
    # Unshuffled: the lone sequence holds blocks 0, 1, 2, so slots 0 .. seq_len - 1.
    out = reference.lone_sequence_attention(q, k_cache, v_cache, range(0, seq_len), scale)
    torch.testing.assert_close(out, naive_attention(q, keys[0], values[0], scale), atol=1e-5, rtol=1e-5)


def test_lone_sequence_attention_gathers_scattered_slots():
    head_dim, block_size, seq_len = 16, 16, 37
    q, k_cache, v_cache, block_tables, _, _, keys, values = make_batch(
        [1], [seq_len], 6, 2, head_dim, block_size, num_blocks=24, seed=2, shuffle=True
    )
    slots = (block_tables[0].long()[:, None] * block_size + torch.arange(block_size)).view(-1)[:seq_len]
    scale = 1 / math.sqrt(head_dim)
    out = reference.lone_sequence_attention(q, k_cache, v_cache, slots, scale)
    torch.testing.assert_close(out, naive_attention(q, keys[0], values[0], scale), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("num_tokens", [1, 5])
def test_rotary_of_q_and_k_split_from_one_projection_equals_rotary_of_copies(num_tokens):
    head_dim, positions = 8, torch.arange(num_tokens) + 2
    angles = torch.outer(torch.arange(10).float(), 1.0 / 10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    cache = torch.cat((angles.cos(), angles.sin()), dim=-1)
    qkv = torch.randn(num_tokens, 3 + 1 + 1, head_dim)  # q|k|v heads of one projection
    q, k, _ = qkv.split([3, 1, 1], dim=1)  # views side by side: rotated as one view
    q_rot, k_rot = reference.rotary(q, k, positions, cache)
    q_copy_rot, k_copy_rot = reference.rotary(q.clone(), k.clone(), positions.clone(), cache)
    torch.testing.assert_close(q_rot, q_copy_rot, atol=0, rtol=0)
    torch.testing.assert_close(k_rot, k_copy_rot, atol=0, rtol=0)
    torch.testing.assert_close(qkv[:, :3], q)  # the projection itself is left as it was

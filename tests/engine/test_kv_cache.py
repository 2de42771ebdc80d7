import pytest

from engine.kv_cache import KVCacheManager
from engine.sequence import Sequence
from engine.types import SamplingParams

BLOCK = 4


def make_seq(tokens, request_id="r"):
    return Sequence(request_id, list(tokens), SamplingParams(), arrival=0)


def compute(kv, seq, num_tokens=None):
    """Allocate and 'compute' the rest of seq (or num_tokens of it), as a step would."""
    num_tokens = num_tokens if num_tokens is not None else seq.num_tokens - seq.num_computed_tokens
    if not seq.block_table:
        num_tokens -= kv.num_cached_prefix_tokens(seq)
    assert kv.can_allocate(seq, num_tokens)
    kv.allocate(seq, num_tokens)
    seq.num_computed_tokens += num_tokens
    kv.cache_full_blocks(seq)


def test_allocate_and_free_count_blocks():
    kv = KVCacheManager(num_blocks=8, block_size=BLOCK)
    seq = make_seq(range(10))
    compute(kv, seq)
    assert len(seq.block_table) == 3 and len(set(seq.block_table)) == 3
    assert kv.num_used_blocks == 3 and kv.num_free_blocks == 5
    assert all(kv.blocks[b].ref_count == 1 for b in seq.block_table)

    seq.token_ids += [1, 2, 3]  # grows into a fourth block
    compute(kv, seq)
    assert len(seq.block_table) == 4

    kv.free(seq)
    assert seq.block_table == [] and kv.num_used_blocks == 0
    assert all(b.ref_count == 0 for b in kv.blocks)


def test_can_allocate_refuses_what_the_pool_cannot_hold():
    kv = KVCacheManager(num_blocks=2, block_size=BLOCK)
    seq = make_seq(range(9))
    assert kv.can_allocate(seq, 8) and not kv.can_allocate(seq, 9)
    with pytest.raises(RuntimeError):
        kv.allocate(seq, 9)


def test_shared_prefix_reuses_blocks_and_counts_hits():
    kv = KVCacheManager(num_blocks=16, block_size=BLOCK)
    first = make_seq(range(12), "a")
    compute(kv, first)
    second = make_seq([*range(8), 50, 51, 52], "b")
    assert kv.num_cached_prefix_tokens(second) == 8
    compute(kv, second)
    assert second.block_table[:2] == first.block_table[:2]
    assert second.block_table[2] not in first.block_table
    assert kv.blocks[first.block_table[0]].ref_count == 2
    assert (kv.prefix_cache_queries, kv.prefix_cache_hits) == (12 + 11, 8)

    kv.free(first)
    kv.free(second)
    assert kv.num_used_blocks == 0


def test_the_last_prompt_token_is_always_computed():
    kv = KVCacheManager(num_blocks=16, block_size=BLOCK)
    compute(kv, make_seq(range(12), "a"))
    # Identical prompt, a whole number of blocks: the last block is recomputed to sample from it.
    assert kv.num_cached_prefix_tokens(make_seq(range(12), "b")) == 8


@pytest.mark.parametrize(("prompt_len", "cached"), [(10, 8), (9, 8), (8, 4), (7, 4), (5, 4), (4, 0), (1, 0)])
def test_only_full_blocks_are_cached(prompt_len, cached):
    kv = KVCacheManager(num_blocks=16, block_size=BLOCK)
    compute(kv, make_seq(range(10), "a"))  # two full blocks and a partial tail of 2 tokens
    assert kv.num_cached_prefix_tokens(make_seq(range(prompt_len), "b")) == cached


def test_a_different_token_early_breaks_the_chain():
    kv = KVCacheManager(num_blocks=16, block_size=BLOCK)
    compute(kv, make_seq(range(12), "a"))
    # Block 1 has the same tokens, but after a different block 0: no hit for either.
    assert kv.num_cached_prefix_tokens(make_seq([9, 9, 9, 9, 4, 5, 6, 7, 8], "b")) == 0


def test_freed_cached_blocks_stay_reusable_until_memory_is_needed():
    kv = KVCacheManager(num_blocks=4, block_size=BLOCK)
    first = make_seq(range(9), "a")  # 2 full blocks + a tail
    compute(kv, first)
    head, middle, tail = first.block_table
    kv.free(first)
    assert kv.num_used_blocks == 0
    assert kv.num_cached_prefix_tokens(make_seq(range(9), "b")) == 8

    # Needs 2 fresh blocks: the never-cached one and the hash-less tail come first...
    other = make_seq([100 + i for i in range(8)], "c")
    compute(kv, other)
    assert set(other.block_table) == {3, tail}
    assert kv.num_cached_prefix_tokens(make_seq(range(9), "b")) == 8
    # ...then the cached chain is evicted from its end, so its head stays findable longest.
    compute(kv, make_seq([200, 201, 202], "d"))
    assert kv.blocks[middle].hash is None and kv.blocks[head].hash is not None
    assert kv.num_cached_prefix_tokens(make_seq(range(9), "b")) == 4


def test_a_hit_on_an_idle_cached_block_takes_it_from_the_pool():
    kv = KVCacheManager(num_blocks=3, block_size=BLOCK)
    first = make_seq(range(9), "a")
    compute(kv, first)
    cached_blocks = first.block_table[:2]
    kv.free(first)
    second = make_seq([*range(8), 70, 71, 72, 73], "b")  # 8 cached + 4 new = 3 blocks, the pool's all
    assert kv.can_allocate(second, 4) and not kv.can_allocate(second, 5)
    compute(kv, second)
    assert kv.num_free_blocks == 0 and second.block_table[:2] == cached_blocks


def test_the_same_block_computed_twice_at_once_is_cached_once():
    kv = KVCacheManager(num_blocks=8, block_size=BLOCK)
    a, b = make_seq(range(6), "a"), make_seq(range(6), "b")
    for seq in (a, b):  # both admitted before either is computed: no hits
        kv.allocate(seq, 6)
    for seq in (a, b):
        seq.num_computed_tokens = 6
        kv.cache_full_blocks(seq)
    assert kv.blocks[a.block_table[0]].hash is not None
    assert kv.blocks[b.block_table[0]].hash is None
    kv.free(a)
    kv.free(b)
    assert kv.num_used_blocks == 0
    assert kv.num_cached_prefix_tokens(make_seq(range(6), "c")) == 4


def test_prefix_caching_off_never_hits():
    kv = KVCacheManager(num_blocks=8, block_size=BLOCK, enable_prefix_caching=False)
    compute(kv, make_seq(range(12), "a"))
    assert kv.num_cached_prefix_tokens(make_seq(range(12), "b")) == 0
    assert kv.prefix_cache_queries == 0



def test_a_growing_sequence_takes_the_next_block_when_it_caches_nothing():
    kv = KVCacheManager(num_blocks=8, block_size=BLOCK)
    earlier = [make_seq([10 * i + j for j in range(3)], f"e{i}") for i in range(3)]
    for seq in earlier:  # blocks 0, 1, 2, each a hash-less partial block
        compute(kv, seq)
    for seq in earlier:
        kv.free(seq)  # free list: 2, 1, 0 (hash-less, at the front), then 3..7
    seq = make_seq(range(3), "a")
    compute(kv, seq)
    assert seq.block_table == [2]
    seq.token_ids += list(range(3, 9))  # two more blocks: 3 and 4 follow 2, where the front has 1 and 0
    compute(kv, seq)
    assert seq.block_table == [2, 3, 4]


def test_a_cached_next_block_is_not_taken_out_of_turn():
    kv = KVCacheManager(num_blocks=4, block_size=BLOCK)
    grows = make_seq(range(4), "a")
    compute(kv, grows)  # block 0
    cached = make_seq(range(100, 104), "c")
    compute(kv, cached)  # block 1, a full block: cached
    kv.free(cached)  # free list: 2, 3, then the cached block 1
    grows.token_ids += [4, 5]
    compute(kv, grows)
    assert grows.block_table == [0, 2]  # not 1: that would evict the cached prefix
    assert kv.num_cached_prefix_tokens(make_seq(range(100, 105), "d")) == 4

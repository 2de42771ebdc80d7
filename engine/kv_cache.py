"""Paged KV block bookkeeping with automatic prefix caching. Pure Python: the runner owns the tensors.

Every full block is keyed by a chained hash of (parent block's hash, its tokens), so two requests
that share a prefix share its blocks. A block whose last user leaves keeps its hash and stays
findable until its memory is needed (least recently freed goes first).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from engine.sequence import Sequence

_ROOT_HASH = 0x5EED  # the "parent" of a sequence's first block (a fixed int: hash(None) varies per process)


@dataclass(slots=True)
class Block:
    block_id: int
    ref_count: int = 0
    hash: int | None = None  # set once the block is full and computed (and prefix caching is on)
    token_ids: tuple[int, ...] = ()  # the block's tokens, to rule out hash collisions on a hit


class KVCacheManager:
    """Hands out KV blocks to sequences.

    Verbs come with their checks: `can_allocate(seq, n)` before `allocate(seq, n)`. For a sequence
    that holds no blocks yet, both first take the cached prefix (see `num_cached_prefix_tokens`), so
    `num_new_tokens` counts only the tokens still to compute beyond it.
    """

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need at least one block of at least one token, got {num_blocks} x {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        # Blocks with ref_count 0, in eviction order: hash-less blocks at the front (nothing to lose),
        # cached ones behind them from least to most recently freed.
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self._block_by_hash: dict[int, int] = {}
        self._num_registered: dict[str, int] = {}  # request id -> leading blocks already offered to the cache
        self.prefix_cache_queries = 0  # tokens looked up at admissions
        self.prefix_cache_hits = 0  # of which found in the cache

    # ---- counters -------------------------------------------------------------------------------

    @property
    def num_free_blocks(self) -> int:
        """Blocks nobody references: truly free plus cached-but-evictable."""
        return len(self._free)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - len(self._free)

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    # ---- prefix lookup --------------------------------------------------------------------------

    def num_cached_prefix_tokens(self, seq: Sequence) -> int:
        """Leading tokens of seq whose K/V are cached, in whole blocks; never all of them, because the
        last token must be computed for the model to sample the next one."""
        return len(self._match_prefix(seq)) * self.block_size

    def _match_prefix(self, seq: Sequence) -> list[int]:
        if not self.enable_prefix_caching or seq.block_table:
            return []
        matched = []
        for index in range((seq.num_tokens - 1) // self.block_size):
            block_id = self._block_by_hash.get(self._block_hash(seq, index))
            if block_id is None or self.blocks[block_id].token_ids != self._block_tokens(seq, index):
                break
            matched.append(block_id)
        return matched

    def _block_tokens(self, seq: Sequence, index: int) -> tuple[int, ...]:
        return tuple(seq.token_ids[index * self.block_size : (index + 1) * self.block_size])

    def _block_hash(self, seq: Sequence, index: int) -> int:
        hashes = seq.block_hashes
        while len(hashes) <= index:  # chain: a block's hash covers every token before it
            parent = hashes[-1] if hashes else _ROOT_HASH
            hashes.append(hash((parent, self._block_tokens(seq, len(hashes)))))
        return hashes[index]

    # ---- allocation -----------------------------------------------------------------------------

    def can_allocate(self, seq: Sequence, num_new_tokens: int) -> bool:
        if seq.block_table:  # the hot path: a running sequence grows
            return self._num_new_blocks(seq, 0, num_new_tokens) <= len(self._free)
        prefix = self._match_prefix(seq)
        # Cached blocks nobody holds sit in the free pool: taking them uses it up like fresh ones.
        prefix_from_pool = sum(1 for b in prefix if self.blocks[b].ref_count == 0)
        return self._num_new_blocks(seq, len(prefix), num_new_tokens) <= len(self._free) - prefix_from_pool

    def allocate(self, seq: Sequence, num_new_tokens: int) -> None:
        """Give seq blocks for `num_new_tokens` more tokens (after its cached prefix, if it holds none yet)."""
        if not seq.block_table:
            self._admit(seq)
        num_new_blocks = self._num_new_blocks(seq, 0, num_new_tokens)
        if num_new_blocks > len(self._free):
            raise RuntimeError(f"{seq.request_id}: {num_new_blocks} KV blocks asked, {len(self._free)} free")
        for _ in range(num_new_blocks):
            seq.block_table.append(self._take_free_block(seq.block_table[-1] + 1 if seq.block_table else None))

    def _num_new_blocks(self, seq: Sequence, num_prefix_blocks: int, num_new_tokens: int) -> int:
        num_tokens = seq.num_computed_tokens + num_prefix_blocks * self.block_size + num_new_tokens
        return -(-num_tokens // self.block_size) - len(seq.block_table) - num_prefix_blocks

    def _admit(self, seq: Sequence) -> None:
        """Attach the cached prefix to a sequence that holds no blocks (new, or back from preemption)."""
        prefix = self._match_prefix(seq)
        for block_id in prefix:
            block = self.blocks[block_id]
            if block.ref_count == 0:
                del self._free[block_id]
            block.ref_count += 1
        seq.block_table = list(prefix)
        seq.num_computed_tokens = len(prefix) * self.block_size
        self._num_registered[seq.request_id] = len(prefix)
        if self.enable_prefix_caching:
            self.prefix_cache_queries += seq.num_tokens
            self.prefix_cache_hits += seq.num_computed_tokens

    def _take_free_block(self, wanted: int | None = None) -> int:
        """The front of the free list, or `wanted` (the block after the sequence's last one) when it
        is free and caches nothing, so taking it out of turn evicts no prefix. A sequence's blocks
        then tend to be consecutive, which a lone CPU decode reads as one slice of the pool instead
        of gathering them every layer (AttentionMetadata.lone_kv_slots)."""
        if wanted is not None and wanted in self._free and self.blocks[wanted].hash is None:
            del self._free[wanted]
            block_id = wanted
        else:
            block_id, _ = self._free.popitem(last=False)
        block = self.blocks[block_id]
        if block.hash is not None:  # evict: its memory is about to be overwritten
            del self._block_by_hash[block.hash]
            block.hash, block.token_ids = None, ()
        block.ref_count = 1
        return block_id

    def cache_full_blocks(self, seq: Sequence) -> None:
        """Offer seq's blocks that are now full and computed to the prefix cache."""
        if not self.enable_prefix_caching:
            return
        num_full = min(seq.num_computed_tokens // self.block_size, len(seq.block_table))
        num_registered = self._num_registered.get(seq.request_id, 0)
        if num_full <= num_registered:  # most decode steps: no block filled up
            return
        for index in range(num_registered, num_full):
            block = self.blocks[seq.block_table[index]]
            block_hash = self._block_hash(seq, index)
            # Two requests may compute the same block in one step: the first one registered wins,
            # the other copy stays private and is recycled as a plain block.
            if block.hash is None and block_hash not in self._block_by_hash:
                block.hash, block.token_ids = block_hash, self._block_tokens(seq, index)
                self._block_by_hash[block_hash] = block.block_id
        self._num_registered[seq.request_id] = num_full

    def free(self, seq: Sequence) -> None:
        """Drop seq's references. Cached blocks stay findable until their memory is needed."""
        # Release the tail first so it is evicted before the head of the chain it depends on.
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                self._free[block_id] = None
                if block.hash is None:
                    self._free.move_to_end(block_id, last=False)
        seq.block_table = []
        self._num_registered.pop(seq.request_id, None)

"""How many splits of the context a decode attention launch uses (flash-decoding).

Pure Python so the choice is tested on any machine. One program handles one (sequence, KV head,
split); a decode batch of few sequences has too few (sequence, KV head) pairs to fill the GPU, so
each sequence's context is cut into splits that run in parallel, then merged
(engine/kernels/triton_split_merge.py).
"""

from __future__ import annotations

# A split shorter than this spends more on writing and merging its partial result than it saves.
# 64 gives a batch-1 program one 64-token tile (loaded before its early-launch wait) instead of
# two: H100, batch-1 decode of the 8B shape at ~600 tokens, +1.5% over 128 (BENCHMARKS.md run 47).
# Read at each call here and at each kernel launch (as a constant of the kernels), so a probe may
# set it.
MIN_SPLIT_TOKENS = 64
MAX_SPLITS = 64
# Programs per SM to aim for: enough resident programs to hide memory latency.
PROGRAMS_PER_SM = 2


def choose_num_splits(num_seqs: int, num_kv_heads: int, max_context: int, num_sms: int) -> int:
    """Splits per sequence so that num_seqs * num_kv_heads * splits roughly fills the SMs.

    max_context bounds every sequence's length (block_tables width * block_size, known on the host
    without a sync, so the choice is the same every time a CUDA graph replays)."""
    if num_seqs < 1 or num_kv_heads < 1 or max_context <= MIN_SPLIT_TOKENS:
        return 1
    programs = num_seqs * num_kv_heads
    wanted = -(-PROGRAMS_PER_SM * num_sms // programs)
    useful = -(-max_context // MIN_SPLIT_TOKENS)
    return max(1, min(wanted, useful, MAX_SPLITS))


def active_splits(seq_len: int, num_splits: int) -> int:
    """Splits a sequence of seq_len tokens really uses (the kernels compute the same on the GPU)."""
    return max(1, min(num_splits, -(-seq_len // MIN_SPLIT_TOKENS)))


def split_length(seq_len: int, num_splits: int, tile: int) -> int:
    """Tokens per split, a whole number of tiles (the kernels compute the same on the GPU)."""
    per_split = -(-seq_len // active_splits(seq_len, num_splits))
    return -(-per_split // tile) * tile

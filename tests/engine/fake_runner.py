"""A deterministic stand-in for the model runner, for tests of the engine's pure logic.

It keeps a simulated paged KV cache: every chunk writes its tokens into the cells its block table
names, and the next token is a function of the context read back through the block table. So a
scheduler or block-manager bug that hands out a block still in use, shares the wrong prefix or
forgets a token changes the output, exactly as it would corrupt a real model's attention.
"""

from __future__ import annotations

from engine.sequence import PENDING_TOKEN, SampledToken, ScheduledBatch
from engine.types import TokenLogprob


def next_token(context: list[int], vocab_size: int, eos_token_id: int | None = None) -> int:
    """The fake model: a deterministic hash of the whole context, never eos unless asked for."""
    value = 0
    for token in context:
        value = (value * 1_000_003 + token + 1) % 2_147_483_647
    token = value % vocab_size
    return token if token != eos_token_id else (token + 1) % vocab_size


class FakeRunner:
    def __init__(
        self,
        num_kv_blocks: int = 64,
        block_size: int = 4,
        max_model_len: int = 512,
        vocab_size: int = 1000,
        eos_token_ids: tuple[int, ...] = (999,),
    ) -> None:
        self.num_kv_blocks = num_kv_blocks
        self.block_size = block_size
        self.max_model_len = max_model_len
        self.vocab_size = vocab_size
        self.eos_token_ids = eos_token_ids
        self.kv_cache_bytes = num_kv_blocks * block_size * 2
        self.cells = [[None] * block_size for _ in range(num_kv_blocks)]  # [block][offset] -> token
        self.batches: list[list[tuple[str, int, int]]] = []  # (request id, start, num_tokens) per chunk
        self.released: list[str] = []
        self.fail_if = None  # optional predicate on the batch: raise instead of running it
        self.forced: dict[str, list[int]] = {}  # request id -> tokens to emit instead of the hash
        # What the real runner keeps on the device: each request's last sampled id, which feeds a
        # PENDING_TOKEN position of the next step when the engine runs ahead.
        self.last_sampled: dict[str, int] = {}

    def execute(self, batch: ScheduledBatch) -> list[SampledToken]:
        self.batches.append([(c.seq.request_id, c.start, c.num_tokens) for c in batch.chunks])
        if self.fail_if is not None and self.fail_if(batch):
            raise RuntimeError("simulated device failure")
        size = self.block_size
        for chunk in batch.chunks:
            seq = chunk.seq
            assert chunk.start == seq.num_computed_tokens, "a chunk must continue where the cache ends"
            assert len(seq.block_table) * size >= chunk.start + chunk.num_tokens, "chunk runs past its blocks"
            for pos in range(chunk.start, chunk.start + chunk.num_tokens):
                token = seq.token_ids[pos]
                if token == PENDING_TOKEN:
                    assert pos == seq.num_tokens - 1, "only a request's last token may be pending"
                    token = self.last_sampled[seq.request_id]
                self.cells[seq.block_table[pos // size]][pos % size] = token
        sampled = []
        for chunk in batch.chunks:
            if not chunk.samples:
                continue
            seq = chunk.seq
            context = [self.cells[seq.block_table[p // size]][p % size] for p in range(seq.num_tokens)]
            forced = self.forced.get(seq.request_id)
            token = forced[seq.num_output_tokens] if forced else next_token(context, self.vocab_size, self.eos_token_ids[0])
            logprob = None
            if seq.params.logprobs is not None:
                logprob = TokenLogprob(token, -0.5, [(token, -0.5)] * seq.params.logprobs)
            sampled.append(SampledToken(token, logprob))
            self.last_sampled[seq.request_id] = token
        return sampled

    def release(self, request_id: str) -> None:
        self.released.append(request_id)


def reference_output(prompt: list[int], max_tokens: int, vocab_size: int = 1000, eos: int = 999) -> list[int]:
    """What a request generates alone (with ignore_eos semantics of the fake model: never eos)."""
    context = list(prompt)
    for _ in range(max_tokens):
        context.append(next_token(context, vocab_size, eos))
    return context[len(prompt) :]

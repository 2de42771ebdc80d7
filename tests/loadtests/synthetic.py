"""Synthetic request records for the pure-logic tests."""

from loadtests.records import RequestRecord


def record(start, ttft=0.2, e2e=1.2, tokens=11, users=1, ok=True, error=None, max_tokens=None, ignore_eos=True):
    gaps = [(e2e - ttft) / (tokens - 1)] * (tokens - 1) if ok and tokens > 1 else []
    return RequestRecord(
        kind="fixed", start=start, users=users, max_tokens=max_tokens or tokens, ignore_eos=ignore_eos,
        ok=ok, error=error, status=None if ok else 503, ttft_s=ttft if ok else None, e2e_s=e2e if ok else None,
        prompt_tokens=32 if ok else None, completion_tokens=tokens if ok else None,
        content_chunks=tokens if ok else 0, finish_reason="length" if ok else None, itl_s=gaps,
    )

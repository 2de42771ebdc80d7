"""Drive any backend until it has nothing left, collecting what each request got."""


def drain(engine, max_steps: int = 1000) -> tuple[dict[str, list[int]], dict[str, str]]:
    """(token ids per request, finish reason per request); fails on a second finish or no end."""
    tokens, reasons = {}, {}
    for _ in range(max_steps):
        if not engine.has_unfinished():
            return tokens, reasons
        for out in engine.step():
            tokens.setdefault(out.request_id, []).extend(out.new_token_ids)
            if out.finish_reason:
                assert out.request_id not in reasons, "a request finished twice"
                reasons[out.request_id] = out.finish_reason
    raise AssertionError(f"engine did not finish in {max_steps} steps")

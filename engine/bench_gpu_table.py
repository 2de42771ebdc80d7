"""The GPU suite's printed table (engine/bench_gpu.py)."""

from __future__ import annotations


def _fmt(value, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def format_table(results: dict) -> str:
    lines = [f"GPU suite on {results['device']} (torch {results['torch']}, triton {results.get('triton')})"]
    bw = results.get("bandwidth", {})
    roof = results.get("roofline", {}).get("decode_tok_s")
    lines.append(f"copy bandwidth {_fmt(bw.get('gb_per_s'))} GB/s -> batch-1 decode roofline {_fmt(roof)} tok/s")
    read_roof = results.get("roofline", {}).get("read_decode_tok_s")
    lines.append(
        f"read bandwidth {_fmt(results.get('read_bandwidth', {}).get('gb_per_s'))} GB/s -> read roofline {_fmt(read_roof)} tok/s"
    )
    gemv = results.get("gemv", {})
    lines.append("batch-1 linear layers            N x K            cuBLAS us  GB/s   Triton us  GB/s")
    for row in gemv.get("rows", []):
        lines.append(
            f"{row['layer']:33}{row['n']:>6} x {row['k']:<6}  {row['cublas_us']:>9.1f}  {row['cublas_gb_per_s']:>5.0f}"
            f"  {row['triton_us']:>9.1f}  {row['triton_gb_per_s']:>5.0f}"
        )
    if "rows" in gemv:
        lines.append(
            f"{'per token (all linears)':33}{'':15}  {gemv['cublas_ms_per_token']:>8.2f}ms  {'':5}  {gemv['triton_ms_per_token']:>7.2f}ms"
        )
    lines.append("decode attention, batch 1        context  splits  split-K us  single us  speedup  GB/s")
    attention = results.get("attention")
    for row in attention if isinstance(attention, list) else []:
        lines.append(
            f"{'':33}{row['context']:>7}  {row['splits']:>6}  {row['split_k_us']:>10.1f}  {row['single_block_us']:>9.1f}"
            f"  {row['speedup']:>6.2f}x  {row['split_k_gb_per_s']:>5.0f}"
        )
    options = results.get("options", {})
    lines.append(f"batch 1, {options.get('prompt_len')}-token prompt, {options.get('new_tokens')} new tokens")
    lines.append("decoder                          decode tok/s  % roofline  % read roof  TTFT ms  logits err vs hf")
    engine = results.get("engine") or {}
    if "ttft_prompt_s" in engine:
        results = {**results, "decode_engine": {**engine, "ttft_s": engine["ttft_prompt_s"]}}
    names = {
        "engine": "ENGINE (scheduler+runner+graphs)",
        "ours": "ours (Triton + CUDA graphs)",
        "ours_gemv": "ours + Triton GEMV linears",
        "hf": "transformers eager",
        "compiled": "torch.compile + graph",
    }
    for key, label in names.items():
        entry = results.get(f"decode_{key}", {})
        if not entry:
            continue  # not run
        rate = entry.get("decode_tok_s")
        share = 100 * rate / roof if rate and roof else None
        read_share = 100 * rate / read_roof if rate and read_roof else None
        ttft = entry["ttft_s"] * 1e3 if "ttft_s" in entry else None
        lines.append(
            f"{label:33}{_fmt(rate):>12}  {_fmt(share):>10}  {_fmt(read_share):>11}  {_fmt(ttft):>7}  {_fmt(entry.get('first_logits_rel_err_vs_hf'), '.2e'):>16}"
            + (f"  ERROR {entry['error']}" if "error" in entry else "")
        )
    if "error" in engine:
        lines.append(f"engine: ERROR {engine['error']}")
    elif engine:
        long = engine.get("long_prompt", 1000)
        samples = engine.get("ttft_long_samples_s") or [engine["ttft_long_s"]]
        spread = f" (median of {len(samples)}: {_fmt(min(samples) * 1e3)}-{_fmt(max(samples) * 1e3)})" if len(samples) > 1 else ""
        lines.append(f"engine TTFT, {long}-token prompt: {_fmt(engine['ttft_long_s'] * 1e3)} ms{spread}"
                     f"   (setup with graph capture {_fmt(engine.get('setup_s'))} s)")
        if engine.get("concurrency"):
            out, wanted = engine["concurrent_out_tokens"], results.get("engine_requested_out", engine["concurrent_out_tokens"])
            cut = f" (output cut from {wanted}: its KV does not fit)" if out != wanted else ""
            if engine.get("concurrent_stopped_at_s"):
                cut += (f" (stopped at {engine['concurrent_stopped_at_s']:.0f} s after"
                        f" {engine['concurrent_generated']} tokens)")
            lines.append(
                f"engine saturated: {engine['concurrency']} concurrent x {long} in / {out} out{cut}:"
                f" {_fmt(engine.get('throughput_tok_s'))} tok/s generated in {_fmt(engine.get('concurrent_elapsed_s'))} s,"
                f" median TTFT {_fmt(engine.get('concurrent_median_ttft_s'))} s"
            )
    return "\n".join(lines)

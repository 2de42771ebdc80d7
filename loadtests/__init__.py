"""Load tests that speak HTTP only, to any OpenAI-compatible server (`llmq loadtest`).

cli       `llmq loadtest run|compare`, options with LLMQ_LOADTEST_* variables
run       one run: settle model and tokenizer, Locust in a child process, then the report
driver    the child process: Locust as a library (gevent lives only there), CSV and HTML
users     the Locust user: the openai client, streaming, per-request measurements
prompts   request shapes (fixed or uniform lengths, shared system prompts); chat_mix, corpus
shapes    load schedules: fixed users, step ramp, concurrency sweep
records   raw per-request records; summary: the numbers; plots; report: summary.json + PNGs
stack     a local `llmq up` for the run; compare: the same load per backend, the seed's table
"""

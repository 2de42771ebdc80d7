"""The OpenAI-compatible HTTP gateway (`llmq gateway`).

Routes: POST /v1/chat/completions and /v1/completions (SSE when "stream" is true), GET /v1/models,
/v1/models/{model}, /health, /ready (Redis answers and every served model has a live worker),
/metrics (Prometheus text) and the OpenAPI docs at /docs.

A request's deadline is --request-timeout (LLMQ_REQUEST_TIMEOUT) unless it sends the header
`X-Request-Timeout: <seconds>` (up to --max-request-timeout). Past it the request is aborted in the
worker and the client gets 504, or an error event mid-stream.

Every error is OpenAI's envelope {"error": {"message", "type", "param", "code"}}: 400 for a field
we do not honour (named in "param") or a prompt too long for the context, 401 for a missing or
unknown key when keys are on, 404, 405, 413, 429 when the per-model bounds are full and 503 when
no worker serves the model or Redis is unreachable (both with Retry-After).

The gateway tokenizes and detokenizes; workers see token ids only. It imports nothing of workers/
but workers/protocol.py, and never torch or engine/.
"""

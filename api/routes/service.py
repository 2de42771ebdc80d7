"""GET /v1/models, /health, /ready and /metrics."""

from __future__ import annotations

import time

from litestar import Controller, MediaType, Response, get
from litestar.datastructures import State
from litestar.params import FromPath

from api.plan import find_model
from api.schemas import ModelCard, ModelList

_STARTED = int(time.time())


class ModelsController(Controller):
    path = "/v1/models"
    tags = ["models"]

    @get("/", operation_id="listModels", summary="Models this gateway serves")
    async def list_models(self, state: State) -> ModelList:
        return ModelList([ModelCard(m.name, _STARTED, m.max_model_len) for m in state.gateway.models.values()])

    @get("/{model:str}", operation_id="retrieveModel", summary="One served model")
    async def retrieve_model(self, model: FromPath[str], state: State) -> ModelCard:
        found = find_model(state.gateway.models, model)
        return ModelCard(found.name, _STARTED, found.max_model_len)


class ServiceController(Controller):
    tags = ["service"]

    @get("/health", operation_id="health", summary="The gateway process is up")
    async def health(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/ready", operation_id="ready", summary="Redis answers and every served model has a live worker")
    async def ready(self, state: State) -> Response[dict]:
        watch = state.gateway.watch
        await watch.poll()
        workers = {name: len(watch.workers.get(name, [])) for name in state.gateway.models}
        ready = watch.redis_ok and all(workers.values())
        body = {"status": "ready" if ready else "not ready", "redis": watch.redis_ok, "workers": workers}
        return Response(body, status_code=200 if ready else 503)

    @get("/metrics", operation_id="metrics", summary="Prometheus metrics", media_type=MediaType.TEXT)
    async def metrics(self, state: State) -> Response[bytes]:
        return Response(state.gateway.metrics.render(),
                        media_type="text/plain; version=0.0.4; charset=utf-8")

"""The Litestar application: create_app(settings) wires routes, the lifespan resources and the
one error envelope. OpenAPI docs at /docs."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin

from api.errors import EXCEPTION_HANDLERS
from api.resources import open_gateway
from api.routes.generate import GenerateController
from api.routes.service import ModelsController, ServiceController
from api.settings import GatewaySettings


def create_app(settings: GatewaySettings) -> Litestar:
    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with open_gateway(settings) as gateway:
            app.state.gateway = gateway
            yield

    return Litestar(
        route_handlers=[GenerateController, ModelsController, ServiceController],
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="llmq", version="0.1.0", path="/docs", render_plugins=[SwaggerRenderPlugin(path="/")],
        ),
        debug=False,
    )

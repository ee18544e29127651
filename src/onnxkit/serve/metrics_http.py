"""``GET /metrics``: Prometheus text for every model and version the store knows."""

from __future__ import annotations

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from onnxkit.serve.http import app_state

router = APIRouter(tags=["metrics"])


async def metrics(request: Request) -> Response:
    state = app_state(request)
    loaded = [(m.name, v.version, v.state.value) for m in state.models.models() for v in m.versions.values()]
    return Response(state.metrics.render(loaded), media_type=CONTENT_TYPE_LATEST)


router.add_route("/metrics", metrics, methods=["GET"], include_in_schema=False)

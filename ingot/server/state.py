"""What every handler shares: the served models, the settings, the metrics, and whether warm-up has finished."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from ingot.server.errors import APIError
from ingot.server.metrics import ServerMetrics
from ingot.server.served import ServedModel
from ingot.server.settings import ServerSettings


@dataclass
class ServerState:
    models: dict[str, ServedModel]
    settings: ServerSettings
    metrics: ServerMetrics
    ready: bool = False

    def model(self, name: str | None) -> ServedModel:
        """The model a request names; without a name, the first one served (as vLLM)."""
        if name is None:
            return next(iter(self.models.values()))
        served = self.models.get(name)
        if served is None:
            raise APIError(404, f"The model `{name}` does not exist.", param="model", code="model_not_found")
        return served


def server_state(request: Request) -> ServerState:
    return request.app.state.ingot

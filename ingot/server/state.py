"""What every handler shares: the served models, the settings, the metrics, and whether warm-up has finished."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import Request

from ingot.server.errors import APIError
from ingot.server.limits import check_sizes
from ingot.server.metrics import ServerMetrics
from ingot.server.served import ServedDetector, ServedModel
from ingot.server.settings import ServerSettings


@dataclass
class ServerState:
    models: dict[str, ServedModel]  # language models
    settings: ServerSettings
    metrics: ServerMetrics
    detectors: dict[str, ServedDetector] = field(default_factory=dict)
    ready: bool = False

    def model(self, name: str | None) -> ServedModel:
        """The language model a request names; without a name, the first one served (as vLLM)."""
        return _named(self.models, self.detectors, name, "language model", "detection model, served at /v1/detections")

    def detector(self, name: str | None) -> ServedDetector:
        """The detection model a request names; without a name, the first one served."""
        return _named(self.detectors, self.models, name, "detection model", "language model, not a detection model")

    def all_served(self) -> list[ServedModel | ServedDetector]:
        return [*self.models.values(), *self.detectors.values()]

    def check_sizes(self, data: dict) -> None:
        """A generation request's counts against this server's limits, before its body is validated."""
        check_sizes(data, self.settings, max((m.engine.max_context for m in self.models.values()), default=0))


def _named(wanted: dict, other: dict, name: str | None, kind: str, other_kind: str):
    if name is None:
        if not wanted:
            raise APIError(400, f"this server serves no {kind}", param="model", code="model_not_found")
        return next(iter(wanted.values()))
    if not name.isprintable():  # a lone UTF-16 surrogate (JSON can spell one, UTF-8 cannot) or a control character
        raise APIError(400, "model must be printable Unicode text", param="model", code="invalid_model_name")
    if name in wanted:
        return wanted[name]
    if name in other:
        raise APIError(400, f"The model `{name}` is a {other_kind}.", param="model", code="wrong_model_kind")
    raise APIError(404, f"The model `{name}` does not exist.", param="model", code="model_not_found")


def server_state(request: Request) -> ServerState:
    return request.app.state.ingot

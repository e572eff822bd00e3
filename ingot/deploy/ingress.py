"""The application's HTTP ingress: every request to an engine replica through a deployment handle (so the request
router sees its prompt), the replica's response streamed back through Ray's proxy; /health and /metrics for the
application as a whole."""

import logging

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from ray import serve
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayError
from ray.serve.exceptions import RayServeException
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator
from starlette.types import Message, Receive, Scope, Send

from ingot.deploy.forwarding import ForwardedRequest
from ingot.deploy.metrics import render_merged
from ingot.server.errors import APIError, error_response

log = logging.getLogger("ingot.deploy")

READY_TIMEOUT = 5.0  # seconds /health waits for the replicas' answers; none in that time: 503
METRICS_TIMEOUT = 5.0  # seconds /metrics waits for each replica's metrics
REPLICA_GONE = (ActorDiedError, ActorUnavailableError)
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]

ingress_app = FastAPI(title="ingot on Ray Serve", openapi_url=None, docs_url=None, redoc_url=None)


class RelayedResponse(Response):
    """A replica's response as its app sent it: the start message verbatim (status, every header), then the body's
    parts as they arrive, so server-sent events stream through."""

    def __init__(self, start: Message, rest: DeploymentResponseGenerator) -> None:
        self.start = start
        self.rest = rest
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(self.start)
        ended = False
        try:
            async for message in self.rest:
                await send(message)
                ended = not message.get("more_body", False)
        except REPLICA_GONE:
            log.warning("a replica died while streaming a response; ending it")
        finally:
            if not ended:
                self.rest.cancel()  # the client left (or the replica died): stop the replica's work on it
        if not ended:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The whole body, or None past ``limit`` bytes (read no further)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def every_replica(replicas: DeploymentHandle, method: str, timeout: float) -> list:
    """``method``'s result from every replica Ray lists as running (an exception in place of a replica's that
    failed); none when there is no replica (Ray's DeploymentUnavailableError, a RayServeException, not a RayError),
    or when they do not all answer within ``timeout`` seconds."""
    try:
        return await replicas.broadcast(method).results_async(timeout_s=timeout, return_exceptions=True)
    except (TimeoutError, RayError, RayServeException):
        return []


# Last in the module: Ray pickles the class when it is decorated, with the module's names bound so far.
@serve.deployment
@serve.ingress(ingress_app)
class IngotIngress:
    def __init__(self, replicas: DeploymentHandle, max_request_bytes: int) -> None:
        self.replicas = replicas
        self.max_request_bytes = max_request_bytes

    @ingress_app.get("/health")
    async def health(self) -> Response:
        """200 while at least one replica is ready, else 503 in OpenAI's error shape.

        Ray lists a replica as running once its constructor (pull, engine, warm-up) has returned; each listed one
        is asked (a broadcast: unlike a routed call, it neither waits for a replica to appear nor wakes a
        deployment scaled to zero), and one killed since fails its answer at once."""
        answers = await every_replica(self.replicas, "ready", READY_TIMEOUT)
        if any(answer is True for answer in answers):
            return Response(status_code=200)
        error = APIError(503, "no replica is ready", type="server_error", code="unavailable", headers={"Retry-After": "1"})
        return error_response(error)

    @ingress_app.get("/metrics")
    async def metrics(self) -> Response:
        """Every ready replica's metrics under vLLM's names, each sample labelled with its replica."""
        per_replica = await every_replica(self.replicas, "metrics", METRICS_TIMEOUT)
        return Response(render_merged(r for r in per_replica if isinstance(r, list)), media_type=CONTENT_TYPE_LATEST)

    @ingress_app.api_route("/{path:path}", methods=METHODS, include_in_schema=False)
    async def forward(self, request: Request) -> Response:
        body = await _read_body(request, self.max_request_bytes)
        if body is None:
            error = APIError(413, f"the request body is larger than {self.max_request_bytes} bytes", code="request_too_large")
            return error_response(error)
        forwarded = ForwardedRequest.of(
            request.method, request.url.path, request.scope["query_string"], list(request.scope["headers"]), body
        )
        # A replica that dies before its response starts has done nothing the client saw: one more replica may try.
        for attempt in range(2):
            stream = self.replicas.forward.options(stream=True).remote(forwarded)
            try:
                start = await stream.__anext__()
            except REPLICA_GONE:
                log.warning("a replica died before answering %s %s (attempt %d)", request.method, request.url.path, attempt + 1)
                continue
            return RelayedResponse(start, stream)
        error = APIError(503, "no replica could take the request", type="server_error", code="unavailable")
        return error_response(error)

"""What `ingot serve` lets an operator tune about the HTTP server."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ingot.errors import OptionError

DEFAULT_MAX_QUEUE = 256
DEFAULT_MAX_REQUEST_BYTES = 4 * 2**20  # a full 128k-token prompt as text or token ids fits with room to spare
DEFAULT_SHUTDOWN_TIMEOUT = 30.0
DEFAULT_MAX_STOP_SEQUENCES = 4  # OpenAI's limit; each costs a match per token per sequence
DEFAULT_MAX_LOGIT_BIAS = 300  # OpenAI's limit; each entry costs an add per token per sequence
DEFAULT_TIMEOUT_KEEP_ALIVE = 5.0  # seconds an idle connection stays open between requests (uvicorn's default)
DEFAULT_READ_TIMEOUT = 30.0  # seconds a client has to send a request's headers, and then its body
DEFAULT_MAX_CONNECTIONS = 256  # open connections; more are answered 503 and closed
DEFAULT_MAX_TOOLS = 128  # OpenAI's limit on a request's tools; each is compiled into a grammar or rendered
TOOL_CALL_PARSERS = ("hermes", "llama3_json")  # vLLM's names for the families server/tools.py parses


@dataclass(frozen=True)
class ServerSettings:
    api_key: str | None = None  # None: no authentication
    max_queue: int = DEFAULT_MAX_QUEUE  # engine requests in flight per model before answering 429
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    log_prompts: bool = False
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT  # seconds in-flight requests get after SIGTERM
    # Larger images (and decompression bombs) get 413 before any pixel is decoded. None: each detector's own cap,
    # derived from its input size (see images.image_pixel_limit).
    max_image_pixels: int | None = None
    max_stop_sequences: int = DEFAULT_MAX_STOP_SEQUENCES
    max_logit_bias: int = DEFAULT_MAX_LOGIT_BIAS
    timeout_keep_alive: float = DEFAULT_TIMEOUT_KEEP_ALIVE
    read_timeout: float = DEFAULT_READ_TIMEOUT  # exceeded: 408 and the connection closed
    max_connections: int = DEFAULT_MAX_CONNECTIONS  # uvicorn's limit_concurrency
    max_tools: int = DEFAULT_MAX_TOOLS
    tool_call_parser: str | None = None  # None: the one the chat template's family writes, if recognised
    playground: bool = True  # the web page at / and /playground

    def __post_init__(self) -> None:
        if self.api_key is not None and not self.api_key.strip():
            raise OptionError("--api-key must not be empty (leave it out to serve without a key)")
        at_least_one = {
            "--max-queue": self.max_queue,
            "--max-request-bytes": self.max_request_bytes,
            "--max-image-pixels": self.max_image_pixels,
            "--max-stop-sequences": self.max_stop_sequences,
            "--max-logit-bias": self.max_logit_bias,
            "--max-connections": self.max_connections,
            "--max-tools": self.max_tools,
            "--timeout-keep-alive": self.timeout_keep_alive,
            "--read-timeout": self.read_timeout,
        }
        for option, value in at_least_one.items():
            if value is not None and not (value >= 1 and math.isfinite(value)):  # `not >=` refuses NaN too
                raise OptionError(f"{option} must be at least 1, not {value}")
        if self.tool_call_parser is not None and self.tool_call_parser not in TOOL_CALL_PARSERS:
            choices = ", ".join(TOOL_CALL_PARSERS)
            raise OptionError(f"--tool-call-parser must be one of {choices}, not {self.tool_call_parser!r}")
        if not (self.shutdown_timeout >= 0 and math.isfinite(self.shutdown_timeout)):
            raise OptionError(f"--shutdown-timeout must be 0 or more, not {self.shutdown_timeout}")

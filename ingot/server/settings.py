"""What `ingot serve` lets an operator tune about the HTTP server."""

from __future__ import annotations

from dataclasses import dataclass

from ingot.errors import OptionError

DEFAULT_MAX_QUEUE = 256
DEFAULT_MAX_REQUEST_BYTES = 4 * 2**20  # a full 128k-token prompt as text or token ids fits with room to spare
DEFAULT_SHUTDOWN_TIMEOUT = 30.0
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485  # Pillow's decompression-bomb limit (a 1024 x 1024 x 4 x 64 / 3 pixel image)
DEFAULT_MAX_STOP_SEQUENCES = 4  # OpenAI's
DEFAULT_MAX_LOGIT_BIAS = 300  # OpenAI's
DEFAULT_TIMEOUT_KEEP_ALIVE = 5.0
DEFAULT_READ_TIMEOUT = 30.0
DEFAULT_MAX_CONNECTIONS = 256


@dataclass(frozen=True)
class ServerSettings:
    api_key: str | None = None  # None: no authentication
    max_queue: int = DEFAULT_MAX_QUEUE  # engine requests in flight per model before answering 429
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    log_prompts: bool = False
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT  # seconds in-flight requests get after SIGTERM
    max_image_pixels: int | None = None  # larger images get 413; None: a cap from each detector's input size
    max_stop_sequences: int = DEFAULT_MAX_STOP_SEQUENCES
    max_logit_bias: int = DEFAULT_MAX_LOGIT_BIAS
    timeout_keep_alive: float = DEFAULT_TIMEOUT_KEEP_ALIVE
    read_timeout: float = DEFAULT_READ_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS

    def __post_init__(self) -> None:
        if self.max_image_pixels is None:  # TEMP shim: the detector-derived cap is another branch's
            object.__setattr__(self, "max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS)
        positive = {"--max-queue": self.max_queue, "--max-request-bytes": self.max_request_bytes,
                    "--max-image-pixels": self.max_image_pixels}  # fmt: skip
        for option, value in positive.items():
            if value < 1:
                raise OptionError(f"{option} must be at least 1, not {value}")
        if self.shutdown_timeout < 0:
            raise OptionError(f"--shutdown-timeout must be 0 or more, not {self.shutdown_timeout}")

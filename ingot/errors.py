"""ingot's exception types. Raised deep, caught at the edges (CLI, HTTP) and turned into one-line messages."""


class IngotError(Exception):
    """Base of every error ingot reports to a user."""


class ModelSourceError(IngotError):
    """The model argument names nothing usable: a missing path, corrupt weights, an unreadable config."""


class UnsupportedModelError(IngotError):
    """The model's architecture is not one ingot compiles."""


class OptionError(IngotError):
    """A compile or serve option has a bad value."""


class CompileError(IngotError):
    """A compile stage failed."""


class VerificationError(CompileError):
    """The compiled programs disagree with the float32 reference beyond the target's thresholds."""


class ArtifactError(IngotError):
    """An artifact is missing, incomplete, tampered with, or built by another toolchain."""


class CpuIsaError(ArtifactError):
    """An artifact's native code needs a CPU flag (a vector ISA) this CPU lacks: loading it would die of SIGILL."""


class ProgramShapeError(IngotError):
    """A call outside a compiled program's shapes. Compiled code does not bounds-check, so it is refused first."""


class SamplingParamsError(IngotError):
    """A request's sampling parameter is out of range. `param` names it, so the server can answer HTTP 400 with it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


class RequestError(IngotError):
    """A request the engine cannot take as given (an empty prompt, a token id outside the vocabulary)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class ContextLengthError(RequestError):
    """The prompt plus max_tokens does not fit the artifact's context."""

    def __init__(self, prompt_tokens: int, max_tokens: int, max_context: int) -> None:
        message = f"this model's maximum context length is {max_context} tokens; the prompt has {prompt_tokens} tokens"
        if prompt_tokens < max_context:
            super().__init__(f"{message} and max_tokens asks for {max_tokens} more", param="max_tokens")
        else:
            super().__init__(f"{message}, which leaves no room to generate", param=None)
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.max_context = max_context


class RegistryError(IngotError):
    """An OCI registry cannot be reached, refuses a request, or does not hold what was asked for."""


class RegistryUnreachableError(RegistryError):
    """No answer from the registry: a wrong host or port, no network, TLS spoken to a plain-HTTP registry."""


class RegistryAuthError(RegistryError):
    """The registry wants credentials that were not given, or refuses the ones that were."""


class RegistryNotFoundError(RegistryError):
    """The registry has no such repository or tag."""

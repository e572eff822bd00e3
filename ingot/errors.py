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


class ProgramShapeError(IngotError):
    """A call outside a compiled program's shapes. Compiled code does not bounds-check, so it is refused first."""

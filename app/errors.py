"""The one error type a user can act on; front ends print its message, never a traceback."""


class LanternError(Exception):
    """A problem the user can fix; the message says what happened and what to do."""


class ModelValidationError(LanternError):
    """A file offered as a model is not a usable GGUF."""


class ContextOverflowError(LanternError):
    """A prompt cannot fit in the model's context window even after trimming."""

"""The conversion pipeline's error: a message that says what went wrong and what to do."""

from app.errors import LanternError


class ConversionError(LanternError):
    """A model could not be loaded, converted, quantized or measured; nothing was left behind."""

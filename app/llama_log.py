"""What llama.cpp may print on the user's terminal: its errors, nothing else.

llama-cpp-python's own log hook lets messages through even with verbose=False, on the TUI's screen
and into piped answers. One of them is no error although llama.cpp logs it as one: the note that a
sliding-window model (Gemma 3) keeps a full-size cache, which Lantern asks for so that a
conversation's prefix can be reused.
"""

from __future__ import annotations

import ctypes
import sys

import llama_cpp

GGML_LOG_LEVEL_ERROR = 3
NOT_AN_ERROR = (b"using full-size SWA cache",)


@llama_cpp.llama_log_callback
def _errors_only(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    if level == GGML_LOG_LEVEL_ERROR and not any(note in text for note in NOT_AN_ERROR):
        sys.stderr.write(text.decode("utf-8", errors="replace"))


def quiet_llama_cpp() -> None:
    """Let only llama.cpp's errors through (the hook stays alive as a module global)."""
    llama_cpp.llama_log_set(_errors_only, ctypes.c_void_p(0))

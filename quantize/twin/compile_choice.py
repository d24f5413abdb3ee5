"""Whether a twin's trained layers run compiled by torch's inductor.

Compiling fuses each layer's small operations (norms, rotary embedding, activation, dtype casts,
the causal attention) into generated C++ kernels; the matrix products stay oneDNN's. It needs a
C++ compiler and costs a one-off 5-30 s at the first step (less once inductor's on-disk cache is
warm), so "auto" compiles only where a compiler is found and the training is long enough to
earn that back.
"""

from __future__ import annotations

import os
import shutil

from quantize.errors import ConversionError

CHOICES = ("auto", "on", "off")
# A step of the default twin takes about 1.3 s on 2 cores and compiling saves a sixth of it or
# more, so runs shorter than this would spend more compiling than they save.
MIN_STEPS = 150
MIN_MINUTES = 3.0


def cxx_compiler() -> str | None:
    found = (shutil.which(name) for name in (os.environ.get("CXX"), "g++", "clang++", "c++") if name)
    return next((path for path in found if path), None)


def should_compile(setting: str, planned_steps: int | None, max_minutes: float | None) -> bool:
    if setting not in CHOICES:
        raise ConversionError(f"--compile must be one of {', '.join(CHOICES)}, not {setting!r}")
    if setting == "off":
        return False
    if cxx_compiler() is None:
        if setting == "on":
            raise ConversionError(
                "--compile on needs a C++ compiler (g++ or clang++, or one named by $CXX): "
                "install one, or train with --compile off"
            )
        return False
    if setting == "on":
        return True
    long_by_steps = planned_steps is not None and planned_steps >= MIN_STEPS
    long_by_time = max_minutes is not None and max_minutes >= MIN_MINUTES
    if planned_steps is not None and max_minutes is not None:
        return long_by_steps and long_by_time
    return long_by_steps or long_by_time

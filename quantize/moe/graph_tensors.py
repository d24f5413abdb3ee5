"""Read tensors out of llama.cpp's compute graph while it runs, through ggml's eval callback.

llama.cpp names its graph tensors (``ffn_moe_argsort-3``...); a context created with
``cb_eval = tap.callback`` asks the tap about each tensor before computing it, then hands over the
computed ones it asked for. Names, sizes and data are read through ggml's own functions, so no
struct layout of ours has to match the library's.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable

import llama_cpp
import numpy as np


@functools.cache
def _ggml():
    lib = ctypes.CDLL(os.path.join(os.path.dirname(llama_cpp.__file__), "lib", "libggml-base.so"))
    lib.ggml_get_name.restype = ctypes.c_char_p
    lib.ggml_get_name.argtypes = [ctypes.c_void_p]
    lib.ggml_nelements.restype = ctypes.c_int64
    lib.ggml_nelements.argtypes = [ctypes.c_void_p]
    lib.ggml_nbytes.restype = ctypes.c_size_t
    lib.ggml_nbytes.argtypes = [ctypes.c_void_p]
    lib.ggml_is_contiguous.restype = ctypes.c_bool
    lib.ggml_is_contiguous.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_tensor_get.restype = None
    size = ctypes.c_size_t
    lib.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, size, size]
    return lib


class GraphTap:
    """Hands ``receive(name, flat array)`` every contiguous graph tensor for which ``dtype_for(name)``
    gives a numpy dtype (int32 or float32 tensors; others are refused when they arrive)."""

    def __init__(
        self,
        dtype_for: Callable[[str], type | None],
        receive: Callable[[str, np.ndarray], None],
    ):
        self._dtype_for = dtype_for
        self._receive = receive
        self.failure: BaseException | None = None  # an exception cannot cross the C boundary
        # Kept as an attribute: llama.cpp holds only the raw pointer, and the callback must outlive it.
        self.callback = llama_cpp.ggml_backend_sched_eval_callback(self._on_tensor)

    def _on_tensor(self, tensor: int, ask: bool, _user_data) -> bool:
        try:
            lib = _ggml()
            name = lib.ggml_get_name(tensor).decode("utf-8", "replace")
            dtype = self._dtype_for(name)
            if ask or dtype is None:
                return dtype is not None
            if not lib.ggml_is_contiguous(tensor):
                return True  # a view: its bytes are not laid out as its shape says
            count, size = lib.ggml_nelements(tensor), lib.ggml_nbytes(tensor)
            data = np.empty(count, dtype=dtype)
            if data.nbytes != size:
                raise RuntimeError(f"graph tensor {name} holds {size} bytes, not {count} x {data.itemsize}")
            lib.ggml_backend_tensor_get(tensor, data.ctypes.data, 0, size)
            self._receive(name, data)
        except BaseException as exc:  # noqa: BLE001 - kept and raised after the decode returns
            if self.failure is None:
                self.failure = exc
            return False  # stops the graph: llama_decode returns an error
        return True

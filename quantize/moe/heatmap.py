"""Heatmaps of layers x experts: one colour scale for the terminal and for a PNG image.

The PNG is written with zlib and struct (an 8-bit RGB image is a few chunks of deflated rows), so
one picture needs no imaging library in the dependencies.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

# Dark violet (little) through teal to yellow (much): readable on dark and light terminals, and for
# the common colour-vision deficiencies.
_STOPS = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], float)
GAP = (255, 255, 255)


def normalised(values: np.ndarray) -> np.ndarray:
    """``values`` divided by their largest, so the busiest cell is 1 (all zeros stay zeros)."""
    values = np.asarray(values, dtype=np.float64)
    top = values.max() if values.size else 0.0
    return values / top if top > 0 else np.zeros_like(values)


def colours(fractions: np.ndarray) -> np.ndarray:
    """RGB (uint8, one more axis of 3) for fractions in [0, 1]."""
    position = np.clip(np.asarray(fractions, dtype=np.float64), 0, 1) * (len(_STOPS) - 1)
    low = np.minimum(position.astype(int), len(_STOPS) - 2)
    share = (position - low)[..., None]
    return np.round(_STOPS[low] * (1 - share) + _STOPS[low + 1] * share).astype(np.uint8)


def heatmap_image(panels: list[np.ndarray], cell: int = 0) -> np.ndarray:
    """The panels (each layers x experts, in [0, 1]) side by side as an RGB image [height, width, 3]."""
    experts = max(panel.shape[1] for panel in panels)
    cell = cell or int(np.clip(512 // max(experts, 1), 2, 24))
    gap = np.full((panels[0].shape[0] * cell, cell, 3), GAP, np.uint8)
    pieces = []
    for panel in panels:
        pixels = np.repeat(np.repeat(colours(panel), cell, axis=0), cell, axis=1)
        pieces.extend([pixels, gap])
    return np.concatenate(pieces[:-1], axis=1)


def png_bytes(image: np.ndarray) -> bytes:
    """An 8-bit RGB PNG of ``image`` ([height, width, 3] uint8)."""
    height, width, _ = image.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8), image.reshape(height, width * 3)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, RGB, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.tobytes(), 9))
        + chunk(b"IEND", b"")
    )

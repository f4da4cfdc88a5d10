"""Neighbourhoods on the voxel grid: offsets, the slices that pair voxels, edge lengths."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Neighbour", "neighbours"]

_FACE = [(1, 0, 0), (0, 1, 0), (0, 0, 1)]
_EDGE = [(1, 1, 0), (1, -1, 0), (1, 0, 1), (1, 0, -1), (0, 1, 1), (0, 1, -1)]
_CORNER = [(1, 1, 1), (1, 1, -1), (1, -1, 1), (1, -1, -1)]


@dataclass(frozen=True)
class Neighbour:
    """One neighbour direction: voxel ``p`` in ``src`` pairs with ``p + offset`` in ``dst``."""

    offset: tuple
    src: tuple  # slices selecting p
    dst: tuple  # slices selecting p + offset
    length_mm: float


def _slices(offset, shape):
    src, dst = [], []
    for o, n in zip(offset, shape):
        if o == 1:
            src.append(slice(0, n - 1))
            dst.append(slice(1, n))
        elif o == -1:
            src.append(slice(1, n))
            dst.append(slice(0, n - 1))
        else:
            src.append(slice(0, n))
            dst.append(slice(0, n))
    return tuple(src), tuple(dst)


def neighbours(shape, spacing, connectivity: int = 6) -> list:
    """Each undirected neighbour pair direction once (3, 9 or 13 of them).

    Parameters
    ----------
    shape : tuple of 3 int
    spacing : tuple of 3 float
        mm per axis; edge lengths use it (anisotropic grids).
    connectivity : {6, 18, 26}
    """
    offsets = {6: _FACE, 18: _FACE + _EDGE, 26: _FACE + _EDGE + _CORNER}.get(connectivity)
    if offsets is None:
        raise ValueError(f"connectivity must be 6, 18 or 26, not {connectivity}")
    out = []
    for offset in offsets:
        src, dst = _slices(offset, shape)
        length = float(np.sqrt(sum((o * s) ** 2 for o, s in zip(offset, spacing))))
        out.append(Neighbour(offset=offset, src=src, dst=dst, length_mm=length))
    return out

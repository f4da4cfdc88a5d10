"""The ``Volume``: a CT in canonical RAS orientation that remembers its header."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .geometry import Geometry, Orientation

__all__ = ["Volume"]


@dataclass
class Volume:
    """A CT volume in Hounsfield units, canonical RAS orientation.

    Attributes
    ----------
    array : (R, A, S) ndarray of float32
        HU values; axis 0 grows towards the patient's right, axis 1 anterior,
        axis 2 superior. A NumPy or CuPy array.
    spacing : tuple of 3 float
        Millimetres between voxel centres along the array axes.
    affine : (4, 4) ndarray
        Maps array indices (i, j, k, 1) to RAS patient millimetres, exactly
        (oblique headers included).
    original : Geometry
        The header of the stored image, so outputs can be written back in it.
    orientation : Orientation
        The permutation and flips between the stored and the canonical array.
    source : str
        Where it was read from (a file, a DICOM folder, or a description).
    info : dict
        Free-form notes from loading (e.g. the DICOM series chosen).
    """

    array: object
    spacing: tuple
    affine: np.ndarray
    original: Geometry
    orientation: Orientation
    source: str = ""
    info: dict = field(default_factory=dict)

    @classmethod
    def from_stored(cls, array_ijk, geometry: Geometry, *, source: str = "", info=None) -> "Volume":
        """Build a Volume from a stored-order (i, j, k) array and its header."""
        orientation = Orientation.from_geometry(geometry)
        array = np.ascontiguousarray(orientation.to_canonical(array_ijk), dtype=np.float32)
        return cls(
            array=array,
            spacing=orientation.canonical_spacing(geometry),
            affine=orientation.canonical_affine(geometry),
            original=geometry,
            orientation=orientation,
            source=source,
            info=dict(info or {}),
        )

    @property
    def shape(self) -> tuple:
        return tuple(self.array.shape)

    def with_array(self, array) -> "Volume":
        """A copy of this volume's geometry holding another array of the same shape."""
        if tuple(array.shape) != self.shape:
            raise ValueError(f"array shape {tuple(array.shape)} != volume shape {self.shape}")
        return replace(self, array=array)

    def to_stored(self, canonical_array):
        """Map a canonical (R, A, S) array back to the stored (i, j, k) order."""
        return self.orientation.from_canonical(canonical_array)

    def index_to_ras(self, indices) -> np.ndarray:
        """(N, 3) canonical voxel indices -> (N, 3) RAS millimetres."""
        idx = np.atleast_2d(np.asarray(indices, dtype=np.float64))
        return idx @ self.affine[:3, :3].T + self.affine[:3, 3]

    def ras_to_index(self, points) -> np.ndarray:
        """(N, 3) RAS millimetres -> (N, 3) fractional canonical indices."""
        pts = np.atleast_2d(np.asarray(points, dtype=np.float64))
        inverse = np.linalg.inv(self.affine)
        return pts @ inverse[:3, :3].T + inverse[:3, 3]

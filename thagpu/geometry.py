"""Image geometry: the original header, and the exact map to canonical RAS arrays.

Conventions
-----------
* ``Geometry`` keeps the header as ITK/SimpleITK report it: ``size``,
  ``spacing`` and ``origin`` in ITK index order (i, j, k) and a row-major 3x3
  ``direction`` whose columns are the index axes in LPS patient coordinates.
* A canonical array has its axes ordered and signed as (R, A, S): index 0 grows
  towards the patient's right, index 1 anterior, index 2 superior. It is
  obtained from the stored array by an axis permutation and flips only, never
  by resampling, so that labels computed on it map back voxel for voxel.
* The affine of a canonical array maps its indices to RAS millimetres.
  Oblique headers keep their exact obliquity in the affine; the permutation
  is the one closest to the oblique axes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Geometry", "Orientation", "LPS_TO_RAS"]

#: Flip between LPS (DICOM/ITK) and RAS (NIfTI/nibabel) patient coordinates.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class Geometry:
    """Header of a 3-D image in ITK conventions (LPS world, index order i, j, k).

    Attributes
    ----------
    size : tuple of 3 int
        Voxels along i, j, k.
    spacing : tuple of 3 float
        Millimetres between voxel centres along i, j, k.
    origin : tuple of 3 float
        LPS position (mm) of the centre of voxel (0, 0, 0).
    direction : tuple of 9 float
        Row-major 3x3 matrix whose columns are the i, j, k axes in LPS.
    """

    size: tuple
    spacing: tuple
    origin: tuple
    direction: tuple

    @classmethod
    def from_sitk(cls, image) -> "Geometry":
        """Geometry of a SimpleITK image (or ImageFileReader after ReadImageInformation)."""
        return cls(
            size=tuple(int(n) for n in image.GetSize()),
            spacing=tuple(float(s) for s in image.GetSpacing()),
            origin=tuple(float(o) for o in image.GetOrigin()),
            direction=tuple(float(d) for d in image.GetDirection()),
        )

    def apply_to(self, image) -> None:
        """Copy this geometry onto a SimpleITK image of the same size."""
        if tuple(image.GetSize()) != tuple(self.size):
            raise ValueError(f"image size {image.GetSize()} != geometry size {self.size}")
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)

    @property
    def direction_matrix(self) -> np.ndarray:
        """(3, 3) ndarray: columns are the index axes in LPS."""
        return np.asarray(self.direction, dtype=np.float64).reshape(3, 3)

    def index_to_lps(self) -> np.ndarray:
        """(4, 4) ndarray mapping (i, j, k, 1) to LPS millimetres."""
        affine = np.eye(4)
        affine[:3, :3] = self.direction_matrix * np.asarray(self.spacing)[None, :]
        affine[:3, 3] = self.origin
        return affine

    def to_dict(self) -> dict:
        return {"size": list(self.size), "spacing": list(self.spacing),
                "origin": list(self.origin), "direction": list(self.direction)}


@dataclass(frozen=True)
class Orientation:
    """Permutation and flips between an image's index axes and canonical RAS axes.

    ``order[w]`` is the stored index axis (i=0, j=1, k=2) that becomes
    canonical axis ``w`` (R=0, A=1, S=2); ``flip[w]`` says whether it runs
    backwards (e.g. an LPS "L" axis becomes R by a flip).
    """

    order: tuple
    flip: tuple

    @classmethod
    def from_geometry(cls, geometry: Geometry) -> "Orientation":
        """Closest canonical orientation of ``geometry``'s direction cosines."""
        ras = LPS_TO_RAS @ geometry.direction_matrix  # columns: index axes in RAS
        weights = np.abs(ras)
        order = [-1, -1, -1]
        flip = [False, False, False]
        # Greedy assignment by the largest cosine: exact for axis-aligned
        # headers and the nearest permutation for oblique ones.
        taken_world, taken_axis = set(), set()
        for flat in np.argsort(weights, axis=None)[::-1]:
            world, axis = divmod(int(flat), 3)
            if world in taken_world or axis in taken_axis:
                continue
            order[world] = axis
            flip[world] = bool(ras[world, axis] < 0)
            taken_world.add(world)
            taken_axis.add(axis)
        return cls(order=tuple(order), flip=tuple(flip))

    @property
    def is_identity(self) -> bool:
        return self.order == (0, 1, 2) and not any(self.flip)

    def to_canonical(self, array_ijk):
        """Reorder a stored (i, j, k) array to canonical (R, A, S); a view where possible."""
        out = array_ijk.transpose(self.order)
        slices = tuple(slice(None, None, -1) if f else slice(None) for f in self.flip)
        return out[slices]

    def from_canonical(self, array_ras):
        """Inverse of :meth:`to_canonical`."""
        slices = tuple(slice(None, None, -1) if f else slice(None) for f in self.flip)
        out = array_ras[slices]
        return out.transpose(np.argsort(self.order))

    def canonical_affine(self, geometry: Geometry) -> np.ndarray:
        """(4, 4) ndarray mapping canonical indices to RAS millimetres."""
        # stored index o = M @ c + b, with M[order[w], w] = +-1.
        m = np.zeros((4, 4))
        m[3, 3] = 1.0
        for world, axis in enumerate(self.order):
            if self.flip[world]:
                m[axis, world] = -1.0
                m[axis, 3] = geometry.size[axis] - 1
            else:
                m[axis, world] = 1.0
        lps_to_ras = np.eye(4)
        lps_to_ras[:3, :3] = LPS_TO_RAS
        return lps_to_ras @ geometry.index_to_lps() @ m

    def canonical_spacing(self, geometry: Geometry) -> tuple:
        return tuple(float(geometry.spacing[axis]) for axis in self.order)

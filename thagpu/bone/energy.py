"""The bone/background energy on the CT grid.

For a labelling ``x`` (1 = bone, 0 = background)::

    E(x) = sum_p D_p(x_p) + sum_{p~q} w_pq [x_p != x_q]

* ``D_p(l)``: partial-volume-aware intensity costs from per-volume tissue
  levels (:mod:`.intensity`) plus a spatial term inside closed bone shells.
* ``w_pq = pairwise_weight * exp(-(I_p - I_q)^2 / (2 sigma^2)) * c / |p - q|_mm``
  on a 6-, 18- or 26-neighbourhood with the real anisotropic spacing: cutting
  is cheap across strong edges and short links cost more; ``c`` makes one
  voxel's links sum to ``6 * pairwise_weight`` on any grid.
* Hard seeds fix ``x_p``; they are infinite unary terms.

Every function takes NumPy or CuPy arrays and returns arrays of the same kind.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..device import get_array_module

__all__ = ["Energy", "pairwise_weights", "energy_of"]


@dataclass
class Energy:
    """Terms of the energy on one grid (arrays on the volume's device).

    Attributes
    ----------
    cost_bone, cost_background : (X, Y, Z) float32 arrays
        Unary costs ``D_p(1)`` and ``D_p(0)``.
    bone_seed, background_seed : (X, Y, Z) bool arrays
        Hard constraints (disjoint).
    links : list of (Neighbour, float32 array)
        Pairwise weights, one array per neighbour direction over its ``src`` region.
    outline_costs : (float32 array, float32 array), optional
        The unary costs of the same energy with the surface at the half maximum rather than at the
        thin-cortex level (``BoneConfig.half_max_level``). Not part of this energy: its cut, which
        errs outwards, outlines the cavities the cleanup fills.
    sheets : (X, Y, Z) bool array, optional
        The dark sheets between two cortices (joint spaces) that the unary costs charge as bone. Not
        part of this energy: the cleanup's one-voxel bridge along coarse axes never closes a gap
        across them.
    """

    cost_bone: object
    cost_background: object
    bone_seed: object
    background_seed: object
    links: list
    outline_costs: object = None
    sheets: object = None

    @property
    def shape(self):
        return tuple(self.cost_bone.shape)


def pairwise_weights(image, neighbours: list, *, sigma_hu: float, weight: float) -> list:
    """Boundary weights ``weight * exp(-dI^2 / 2 sigma^2) * c / length`` per neighbour direction.

    ``c`` normalises the neighbourhood: the links of one voxel (both ways of
    every direction) sum to ``6 * weight`` when the intensities are equal,
    whatever the spacing and connectivity. The boundary term then has the
    same strength on any grid, and soft tissue whose unary cost exceeds
    ``6 * weight`` is fixed in the first reduction pass.
    """
    xp = get_array_module(image)
    links = []
    scale = np.float32(-0.5 / sigma_hu ** 2)
    norm = 6.0 / sum(2.0 / nb.length_mm for nb in neighbours)
    for nb in neighbours:
        # In place: the same float32 operations (the image is float32 HU), without four temporaries
        # of the volume's size per direction.
        w = (image[nb.dst] - image[nb.src]).astype(xp.float32, copy=False)
        xp.multiply(w, w, out=w)
        w *= scale
        xp.exp(w, out=w)
        w *= np.float32(weight * norm / nb.length_mm)
        links.append((nb, w))
    return links


def energy_of(labels, energy: Energy) -> float:
    """Energy of a bone labelling (bool array); ``inf`` if it breaks a seed.

    Summed in float64 on the host-side reduction so that two labellings'
    energies compare to floating tolerance.
    """
    xp = get_array_module(labels)
    labels = labels.astype(bool, copy=False)
    if bool(xp.any(labels & energy.background_seed)) or bool(xp.any(~labels & energy.bone_seed)):
        return float("inf")
    total = float(xp.sum(xp.where(labels, energy.cost_bone, energy.cost_background), dtype=xp.float64))
    for nb, w in energy.links:
        cut = labels[nb.src] != labels[nb.dst]
        total += float(xp.sum(w[cut], dtype=xp.float64))
    return total

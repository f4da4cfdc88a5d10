"""Per-volume intensity levels and the unary costs built from them.

No single threshold fits every scanner, kernel and patient, so each volume's
levels are estimated from its own body histogram: the soft-tissue peak, the
noise around it, and the cortical level (:func:`estimate_tissue_levels`).

The unary costs are partial-volume aware. Between clear soft tissue (up to
``soft + k * noise``) and the half-way level between soft tissue and cortex,
a voxel may be cancellous bone or the blurred rim just outside a cortex; its
intensity cannot tell, so its unary is neutral and the boundary term places
the surface at the strongest edge. Below that range a voxel costs ``weight``
nats as bone, above it ``weight`` nats as background, with linear ramps one
noise SD wide. The interior of bones is held by a separate spatial term (see
:func:`thagpu.bone.build_energy`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..device import bincount, get_array_module, to_host
from ..morphology import maximum_filter1d, minimum_filter1d, ndimage_for

__all__ = ["TissueLevels", "estimate_tissue_levels", "thick_bright", "local_noise", "axial_sample", "NOISE_SLICES",
           "IntensityModel", "THICK_BRIGHT_HALF_MM"]


@dataclass(frozen=True)
class TissueLevels:
    """Robust per-volume HU levels: soft tissue (muscle), its noise, and dense cortical bone."""

    soft_hu: float
    noise_hu: float
    cortical_hu: float

    def between(self, fraction: float) -> float:
        """The HU ``fraction`` of the way from soft tissue to cortex."""
        return self.soft_hu + fraction * (self.cortical_hu - self.soft_hu)


#: Bright regions at least twice this thick (mm) in every direction are not cortex (a cortex is 0.5-8 mm
#: thick; under it lies cancellous bone, darker): a contrast-filled bladder or aorta, which must not set
#: the cortical level.
THICK_BRIGHT_HALF_MM = 6.0


def estimate_tissue_levels(image, body, *, metal_hu: float = 2500.0, spacing=None) -> TissueLevels:
    """Soft-tissue peak, noise and cortical level of the body's voxels.

    * soft tissue: the histogram mode between -30 and 150 HU of the 5 x 5 in-plane local means
      (muscle in a hip CT; the contrast-enhanced liver, about 100 HU, in an upper abdomen), on at
      most :data:`NOISE_SLICES` axial slices;
    * noise: the median local standard deviation (5 x 5 in-plane windows) where the local mean
      is within 60 HU of that mode. A spread of the values around the mode would mix tissues
      (liver, muscle, kidney) and read the noise of a real abdomen 3x too high;
    * cortex: the 99.8th percentile of the body below metal. Bone is several
      per cent of a hip CT's body voxels, so the top 0.2 % is dense cortex;
      in osteoporosis it is lower, and so are the thresholds derived from it.
      With ``spacing``, regions that stay above half-way to that level over a box
      :data:`THICK_BRIGHT_HALF_MM` each side are left out and the percentile is
      taken again: a contrast-filled bladder (800 HU) is larger than the top 0.2 % of a pelvis CT
      and set the level of a faint osteoporotic skeleton (cortex 250-400 HU at 3 mm voxels) to
      that of contrast, above every bone voxel. Bone is never that thick at that level: a cortex
      is 0.5-8 mm thick and the cancellous bone under it is darker.
    """
    xp = get_array_module(image)
    below_metal = body & (image < metal_hu)
    values = image[below_metal]
    if values.size == 0:
        return TissueLevels(soft_hu=40.0, noise_hu=20.0, cortical_hu=1000.0)
    edges = np.arange(-30.0, 151.0, 5.0)
    # The mode of the local means, not of the voxels: at the noise of a sharp (bone) kernel,
    # 60-100 HU, the fat peak's tail outweighs the muscle peak in the voxels' histogram and its
    # mode falls to the range's lower end; a 5 x 5 window's mean has a fifth of that noise.
    sample, sample_body = axial_sample(image, below_metal)
    sample = sample.astype(xp.float32, copy=False)
    window_mean = ndimage_for(sample).uniform_filter(sample, (5, 5, 1))
    means = window_mean[sample_body]
    in_range = means[(means >= edges[0]) & (means < edges[-1])]
    if in_range.size == 0:
        soft = 40.0
    else:
        counts = to_host(bincount(((in_range - edges[0]) / 5.0).astype(xp.int32), minlength=len(edges) - 1))
        soft = float(edges[int(np.argmax(counts))] + 2.5)
    noise = _window_noise(sample, sample_body, window_mean, soft)
    cortical = float(to_host(xp.percentile(values, 99.8)))
    if spacing is not None:
        thick = thick_bright(image, spacing, soft + 0.5 * (cortical - soft)) & below_metal
        if bool(thick.any()):
            cortical = float(to_host(xp.percentile(image[below_metal & ~thick], 99.8)))
    return TissueLevels(soft_hu=soft, noise_hu=max(noise, 1.0), cortical_hu=max(cortical, soft + 100.0))


def thick_bright(image, spacing, level_hu: float, half_mm: float = THICK_BRIGHT_HALF_MM):
    """Voxels above ``level_hu`` covered by a box ``half_mm`` each side that lies wholly above it.

    A morphological opening (erosion then dilation by the box, separable minimum and maximum
    filters): the thick parts of the regions above the level, and nothing of thinner structures.
    """
    size = tuple(2 * max(1, int(round(half_mm / float(s)))) + 1 for s in spacing)
    # A box's minimum is above the level exactly when every voxel in it is: the erosion of the
    # thresholded mask, on one byte a voxel instead of four.
    core = image > np.float32(level_hu)
    for axis, n in enumerate(size):
        # Odd boxes centred on the voxel: the edge mode equals SciPy's default reflect mode here.
        core = minimum_filter1d(core, n, axis)
    if not bool(core.any()):
        return core
    for axis, n in enumerate(size):
        core = maximum_filter1d(core, n, axis)
    return core


#: :func:`local_noise` and the soft-tissue mode read at most this many axial slices of a volume.
NOISE_SLICES = 64


def axial_sample(image, mask):
    """At most :data:`NOISE_SLICES` evenly spaced axial slices of ``image`` and ``mask``.

    Parameters
    ----------
    image, mask : (X, Y, Z) arrays
        NumPy or CuPy; axis 2 is the axial (slice) axis.

    Returns
    -------
    image, mask
        Unchanged when they have at most :data:`NOISE_SLICES` slices; else copies of that many
        slices, from the first to the last, evenly spaced.
    """
    n = image.shape[2]
    if n <= NOISE_SLICES:
        return image, mask
    index = np.linspace(0, n - 1, NOISE_SLICES).round().astype(np.intp)
    xp = get_array_module(image)
    index = xp.asarray(index) if xp is not np else index
    # take, not fancy indexing: the same copy, 3-4x faster in NumPy along the last axis.
    return xp.take(image, index, axis=2), xp.take(mask, index, axis=2)


def local_noise(image, body, soft_hu: float) -> float:
    """Noise SD of ``image``: the median, over soft-tissue windows inside ``body``, of the local SD.

    Windows are 5 x 5 voxels within an axial slice (CT noise is correlated over about a voxel, so
    the window spans several correlation lengths); windows whose mean is within 60 HU of
    ``soft_hu`` count. Edges inflate a minority of windows, which the median ignores. Of a volume
    with more than :data:`NOISE_SLICES` axial slices, evenly spaced slices are read (the windows
    lie within a slice, so each is as before; millions of them still give the median).
    """
    xp = get_array_module(image)
    image, body = axial_sample(image, body)
    image = image.astype(xp.float32, copy=False)
    return _window_noise(image, body, ndimage_for(image).uniform_filter(image, (5, 5, 1)), soft_hu)


def _window_noise(image, body, mean, soft_hu: float) -> float:
    """:func:`local_noise` of float32 ``image`` (already sampled) whose 5 x 5 in-plane means are ``mean``."""
    xp = get_array_module(image)
    mean_sq = ndimage_for(image).uniform_filter(image * image, (5, 5, 1))
    counted = body & (xp.abs(mean - np.float32(soft_hu)) < 60.0)
    mean, mean_sq = mean[counted], mean_sq[counted]  # the SDs of the counted windows only
    sd = xp.sqrt(xp.maximum(mean_sq - mean * mean, 0.0))
    if sd.size == 0:
        return 20.0
    return float(to_host(xp.median(sd))) * float(np.sqrt(25.0 / 24.0))  # sample SD of 25 values


@dataclass(frozen=True)
class IntensityModel:
    """Partial-volume-aware unary costs (nats) from a volume's tissue levels.

    Attributes
    ----------
    soft_max_hu : float
        Up to here a voxel is clearly soft tissue (bone costs ``weight``).
    bone_min_hu : float
        From here a voxel is clearly bone (background costs ``weight``).
    ramp_hu : float
        Width of the linear ramps at both ends.
    weight : float
    """

    soft_max_hu: float
    bone_min_hu: float
    ramp_hu: float
    weight: float

    @classmethod
    def from_levels(cls, levels: TissueLevels, *, soft_sd: float = 3.0, bone_fraction: float = 0.5,
                    weight: float = 2.0) -> "IntensityModel":
        soft_max = levels.soft_hu + soft_sd * levels.noise_hu
        bone_min = max(levels.between(bone_fraction), soft_max + levels.noise_hu)
        return cls(soft_max_hu=soft_max, bone_min_hu=bone_min, ramp_hu=max(levels.noise_hu, 10.0), weight=weight)

    def costs(self, image):
        """Unary cost arrays (bone, background) for ``image``, float32 on its device."""
        xp = get_array_module(image)
        half = np.float32(self.ramp_hu / 2)
        cost_bone = xp.clip((np.float32(self.soft_max_hu) + half - image) / np.float32(self.ramp_hu), 0, 1)
        cost_background = xp.clip((image - np.float32(self.bone_min_hu) + half) / np.float32(self.ramp_hu), 0, 1)
        w = np.float32(self.weight)
        return (cost_bone * w).astype(xp.float32), (cost_background * w).astype(xp.float32)

    def to_dict(self) -> dict:
        return {"soft_max_hu": round(self.soft_max_hu, 1), "bone_min_hu": round(self.bone_min_hu, 1),
                "ramp_hu": round(self.ramp_hu, 1), "weight": self.weight}

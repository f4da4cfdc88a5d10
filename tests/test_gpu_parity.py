"""CPU/GPU parity of BE and of BE + AFS on one volume (marked ``gpu``: run with ``pytest -m gpu`` on a GPU).

Both devices run the same code (NumPy or CuPy through ``get_array_module``; the max-flow on the host),
so the cut and the labels should be identical. They may differ only through float32 rounding: CuPy's
``exp``, its Gaussian filters and its reductions may round differently from NumPy's in the last bit.
The tolerances below allow that much and no more:

* **Cut energy.** Each term of the energy (a unary cost or a link weight) is float32; on the two devices
  a term may differ by a few units in the last place, so for any labelling ``x`` the two energies
  differ by at most ``k * eps32 * E(x)`` (all terms are non-negative; ``eps32 = 1.19e-7``, ``k`` a few
  ulps). Each device's cut is a minimum of its own energy, so on one common energy (the CPU's, summed
  in float64) the GPU's cut is at most ``2 k eps32 E`` above the CPU's minimum, and each device's own
  minimum differs from the other's by at most ``k eps32 E``: ``rel = 1e-6`` is ``2 k eps32`` with
  ``k = 4``. A different threshold, seed or crop on the GPU moves the energy by far more and fails.
* **Voxels.** Rounding can only flip a voxel where the two labels cost the same to within that
  rounding (a tie in the cut), or where a voxel centre lies within rounding of a fitted sphere or a
  watershed tie in AFS. Such voxels are rare: at most ``1e-4`` of the bone voxels (about 16 on this
  volume) may differ in the bone mask, and at most ``1e-3`` of the hip-label voxels in the labels.
  The last GPU session found 0 of 159710 mask voxels differing on this volume
  (``benchmarks/results/gpu/bone_parity.json``, older code).
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

#: Relative tolerance of the cut energies (see the module docstring).
ENERGY_RTOL = 1e-6
#: Fraction of the bone voxels that may differ between the devices' bone masks and cuts.
MASK_TOLERANCE = 1e-4
#: Fraction of the hip-label voxels (labels 1-4) that may differ between the devices' label maps.
LABEL_TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def volume():
    from thagpu.phantom import make_phantom

    return make_phantom(7, size="small", preset="hard").to_volume()


def _devices():
    from thagpu.device import resolve_device

    return "cpu", resolve_device("gpu")  # DeviceError, not a skip, when -m gpu runs without a GPU


def test_bone_extraction_cpu_and_gpu_find_the_same_cut(volume):
    from thagpu.bone import build_energy, energy_of, extract_bone
    from thagpu.config import BoneConfig
    from thagpu.device import to_device, to_host

    cpu_device, gpu_device = _devices()
    cpu = extract_bone(volume.with_array(to_device(volume.array, cpu_device)))
    gpu = extract_bone(volume.with_array(to_device(volume.array, gpu_device)))
    assert type(gpu.mask).__module__.startswith("cupy")  # the work ran on the GPU
    assert gpu.diagnostics["crop"] == cpu.diagnostics["crop"]
    assert gpu.diagnostics["intensity_model"] == pytest.approx(cpu.diagnostics["intensity_model"], rel=1e-5)
    bone_voxels = int(cpu.mask.sum())
    assert bone_voxels > 10000
    allowed = MASK_TOLERANCE * bone_voxels
    assert int((to_host(gpu.cut) != cpu.cut).sum()) <= allowed
    assert int((to_host(gpu.mask) != cpu.mask).sum()) <= allowed
    # The same minimum: each device's own, and both cuts on the CPU's whole-volume energy.
    assert gpu.diagnostics["cut_energy"] == pytest.approx(cpu.diagnostics["cut_energy"], rel=ENERGY_RTOL)
    energy, _, _ = build_energy(volume.array, volume.spacing, BoneConfig())
    assert energy_of(to_host(gpu.cut), energy) == pytest.approx(energy_of(cpu.cut, energy), rel=ENERGY_RTOL)


def test_coarse_to_fine_bone_extraction_is_the_same_on_both_devices():
    """Sub-millimetre pixels: BE on block means, its surface band decided at full resolution (the
    CPU by a compiled loop over the band, the GPU by whole-box filters: the same tilt)."""
    from test_bone import _thin_cortex_ball, _volume

    from thagpu.bone import extract_bone
    from thagpu.device import to_device, to_host

    cpu_device, gpu_device = _devices()
    hu, _ = _thin_cortex_ball((0.6, 0.6, 1.0), fine=3)
    volume = _volume(hu, (0.6, 0.6, 1.0))
    cpu = extract_bone(volume.with_array(to_device(volume.array, cpu_device)))
    gpu = extract_bone(volume.with_array(to_device(volume.array, gpu_device)))
    assert type(gpu.mask).__module__.startswith("cupy")
    assert gpu.diagnostics["coarse_to_fine"]["band_voxels"] == cpu.diagnostics["coarse_to_fine"]["band_voxels"] > 0
    bone_voxels = int(cpu.mask.sum())
    assert int((to_host(gpu.mask) != cpu.mask).sum()) <= MASK_TOLERANCE * bone_voxels


def test_bone_and_hip_segmentation_cpu_and_gpu_give_the_same_labels(volume):
    from thagpu.config import Config
    from thagpu.pipeline import segment_volume

    cpu_device, gpu_device = _devices()
    config = Config()
    cpu_labels, cpu_results = segment_volume(volume, config, cpu_device, {})
    gpu_labels, gpu_results = segment_volume(volume, config, gpu_device, {})
    assert isinstance(gpu_labels, np.ndarray) and gpu_labels.shape == cpu_labels.shape
    hip_voxels = int(((cpu_labels >= 1) & (cpu_labels <= 4)).sum())
    assert hip_voxels > 1000
    assert int((gpu_labels != cpu_labels).sum()) <= LABEL_TOLERANCE * hip_voxels
    assert gpu_results["bone"]["cut_energy"] == pytest.approx(cpu_results["bone"]["cut_energy"], rel=ENERGY_RTOL)
    for side in ("left", "right"):
        a, b = cpu_results["sides"][side], gpu_results["sides"][side]
        assert a["status"] == b["status"]
        if a.get("head_center_mm") is not None:
            np.testing.assert_allclose(b["head_center_mm"], a["head_center_mm"], atol=0.05)
            assert b["head_radius_mm"] == pytest.approx(a["head_radius_mm"], abs=0.05)

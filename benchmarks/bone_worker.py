"""One bone-extraction measurement in its own process (so peak memory is its own).

python -m benchmarks.bone_worker METHOD SEED PRESET SPACING_X,Y,Z|full [DEVICE] [JOINT_SPACE_MM] [FOV_MM]

METHOD, all through :func:`thagpu.bone.extract_bone` (same energy, same hole filling and cleanup, the
same three timed stages ``energy``, ``graph_cut``, ``cleanup``):

* ``fullgrid_uncropped``: the whole grid, plain PyMaxflow with every voxel a node (air and seeds
  included): what a user who neither crops nor reduces would write;
* ``fullgrid_cropped``: the same crop as ``ours`` (the body's box, then a box around possible bone) and
  the same energy there, plain PyMaxflow with every voxel of the box a node: the gain of the exact
  reduction alone is ``fullgrid_cropped`` against ``ours``;
* ``ours``: the crop and the exact reduction, PyMaxflow on the voxels left free;
* ``banded``: ours with a coarse solve and a band (an approximation).

``time_s`` is the sum of the three stages; ``peak_rss_mb`` is read right after them. The energy of the
cut on the whole volume (``cut_energy``, float64, the same full-grid energy for every method, so that
the minima compare) and the accuracy figures are computed after both, outside every timer.
``cut_energy_box`` is the energy of the cut on the region the method solved (``extract_bone``'s own
diagnostic). JOINT_SPACE_MM forces that joint-space width on both sides ("-": the phantom's own);
FOV_MM (``X,Y,Z``) renders that field of view only, centred on the phantom. Prints one JSON line.

Joint-space openness, per side (left, right), two measures:

* ``gap_open``: the fraction of the true joint-gap voxels that the mask leaves as background. The gap
  voxels are those whose centre the phantom paints as cartilage: between the head surface and the
  socket surface, where the bony socket covers the head. On a 1 mm grid blurred by the scanner PSF a
  1 mm gap is partly unresolvable, so this graded measure says how much of it stays open.
* ``joint_open`` (strict): the femur and the hip bone of that side, as the truth has them, fall in
  different 26-connected components of the mask. ``None`` where the truth itself does not separate
  them (the phantom's femoral neck touches the acetabular rim on some sides), since no mask can then.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

#: Method -> the options of ``extract_bone`` it runs with (see the module docstring).
METHODS = {
    "fullgrid_uncropped": {"crop": False, "solver": "full_grid"},
    "fullgrid_cropped": {"crop": True, "solver": "full_grid"},
    "ours": {"crop": True, "solver": "reduced"},
    "banded": {"crop": True, "solver": "reduced"},
}
#: The timed stages of every method; ``time_s`` is their sum (``refine``: only where axes finer than 0.85 mm
#: are solved coarse to fine, ``thagpu/bone/refine.py``; the coarse BE's own stages are the first three;
#: ``sharp_check``: the block means and their noise, where a sharp kernel sent the solve to the full grid).
STAGES = ("energy", "graph_cut", "cleanup", "refine", "sharp_check")


def _components_separate(mask, femur, hip):
    """True when the femur and the hip bone voxels of the mask lie in different 26-connected components."""
    from scipy import ndimage
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    a = np.unique(labels[femur & mask])
    b = np.unique(labels[hip & mask])
    a, b = set(a[a > 0]), set(b[b > 0])
    return bool(a) and bool(b) and not (a & b)


def joint_openness(case, mask):
    """``{"gap_open": [...], "joint_open": [...], "gap_voxels": [...]}`` per side with a head (see the docstring)."""
    from thagpu.phantom import MATERIALS, PARTS
    truth = case.canonical_labels()
    parts = case.canonical(case.parts)
    gap = case.canonical(case.materials) == MATERIALS["cartilage"]
    heads = {side: np.argwhere(truth == label).mean(axis=0) for side, label in (("left", 1), ("right", 3))
             if (truth == label).any()}
    gap_idx = np.argwhere(gap)
    out = {"gap_open": [], "joint_open": [], "gap_voxels": []}
    for side, centre in heads.items():
        # Each gap voxel belongs to the side whose head centroid is nearer.
        others = [c for s, c in heads.items() if s != side]
        d = np.linalg.norm(gap_idx - centre, axis=1)
        mine = np.ones(len(gap_idx), bool) if not others else d < np.linalg.norm(gap_idx - others[0], axis=1)
        pts = gap_idx[mine]
        n = len(pts)
        out["gap_voxels"].append(n)
        out["gap_open"].append(round(float((~mask[tuple(pts.T)]).mean()), 4) if n else None)
        femur, hip = parts == PARTS[f"femur_{side}"], parts == PARTS[f"hip_{side}"]
        truth_separate = _components_separate(femur | hip, femur, hip)
        out["joint_open"].append(_components_separate(mask, femur, hip) if truth_separate else None)
    return out


def main(argv):
    method, seed, preset, spacing = argv[0], int(argv[1]), argv[2], argv[3]
    device = argv[4] if len(argv) > 4 else "cpu"
    joint_space = float(argv[5]) if len(argv) > 5 and argv[5] != "-" else None
    fov = tuple(float(v) for v in argv[6].split(",")) if len(argv) > 6 else None
    from benchmarks.common import code_version, peak_rss_mb
    from thagpu.bone import build_energy, energy_of, extract_bone
    from thagpu.config import BoneConfig
    from thagpu.device import to_device, to_host
    from thagpu.memory import keep_freed_memory
    from thagpu.metrics import dice
    from thagpu.phantom import make_phantom

    keep_freed_memory()  # as the thagpu command does, for every row alike (thagpu/memory.py)
    if method not in METHODS:
        raise SystemExit(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if spacing == "full":
        case = make_phantom(seed, size="full", preset=preset, joint_space_mm=joint_space)
    else:
        case = make_phantom(seed, size="small", preset=preset,
                            spacing=tuple(float(v) for v in spacing.split(",")), header="RAS",
                            joint_space_mm=joint_space, fov_mm=fov)
    volume = case.to_volume()
    truth = case.canonical_labels()
    rss_before = peak_rss_mb()
    out = {"method": method, "seed": seed, "preset": preset, "shape": list(volume.shape),
           "spacing_mm": [round(s, 3) for s in volume.spacing], "device": device}
    config = BoneConfig(mode="banded" if method == "banded" else "exact")
    options = METHODS[method]
    on_device = volume.with_array(to_device(volume.array, device))
    if device == "gpu":
        import cupy
        extract_bone(on_device, config, **options)  # warm-up: kernels compiled, memory pool filled
        cupy.cuda.runtime.deviceSynchronize()
    result = extract_bone(on_device, config, **options)
    if device == "gpu":
        cupy.cuda.runtime.deviceSynchronize()
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    out["peak_rss_before_mb"] = round(rss_before, 1)
    stages = result.diagnostics["timings_s"]
    out.update(graph_nodes=result.diagnostics["graph_nodes"], stages_s=stages,
               time_s=round(sum(stages.get(k, 0.0) for k in STAGES), 3),
               solved_shape=[b - a for a, b in result.diagnostics["crop"]])
    mask = to_host(result.mask)
    # Outside every timer: the energy of the cut on the whole volume, the same energy for every method.
    if "refine" in stages:
        # Solved coarse to fine: no minimum of the full-resolution energy is sought (its cut is the
        # coarse one, and breaks fine seeds), so there is no energy to compare; the Dice is the figure.
        out["cut_energy"] = out["cut_energy_box"] = None
    else:
        energy, _, _ = build_energy(volume.array, volume.spacing, config)
        out["cut_energy"] = energy_of(to_host(result.cut), energy)
        out["cut_energy_box"] = result.diagnostics["cut_energy"]
    out["dice"] = round(dice(mask, truth > 0), 4)
    heads = [(truth == label) for label in (1, 3) if (truth == label).any()]
    out["head_solid"] = round(float(min(mask[h].mean() for h in heads)), 4) if heads else None
    sides = case.truth["sides"]
    out["joint_space_mm"] = [sides[s]["joint_space_mm"] for s in ("left", "right")]
    out.update(joint_openness(case, mask))
    out.update(code_version())  # a row copied out of a GPU session keeps the code it describes
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])

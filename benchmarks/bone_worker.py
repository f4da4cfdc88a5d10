"""One bone-extraction measurement in its own process (so peak memory is its own).

python -m benchmarks.bone_worker METHOD SEED PRESET SPACING_X,Y,Z|full [DEVICE]
METHOD: ours | banded | fullgrid (the plain full-grid PyMaxflow cut a user would write, same energy,
hole filling). Prints one JSON line.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def _components_separate(mask, truth, head_label, cup_label):
    """True when the femoral head and its acetabulum are different components of the mask."""
    from scipy import ndimage
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    head = np.unique(labels[(truth == head_label) & mask])
    cup = np.unique(labels[(truth == cup_label) & mask])
    head, cup = set(head[head > 0]), set(cup[cup > 0])
    return bool(head) and bool(cup) and not (head & cup)


def main(argv):
    method, seed, preset, spacing = argv[0], int(argv[1]), argv[2], argv[3]
    device = argv[4] if len(argv) > 4 else "cpu"
    from benchmarks.common import peak_rss_mb
    from thagpu.bone import build_energy, energy_of, extract_bone, minimum_cut, solve_full_grid
    from thagpu.bone.cleanup import fill_cavities
    from thagpu.config import BoneConfig
    from thagpu.device import to_device, to_host
    from thagpu.metrics import dice
    from thagpu.phantom import make_phantom

    if spacing == "full":
        case = make_phantom(seed, size="full", preset=preset)
    else:
        case = make_phantom(seed, size="small", preset=preset,
                            spacing=tuple(float(v) for v in spacing.split(",")), header="RAS")
    volume = case.to_volume()
    truth = case.canonical_labels()
    rss_before = peak_rss_mb()
    out = {"method": method, "seed": seed, "preset": preset, "shape": list(volume.shape),
           "spacing_mm": [round(s, 3) for s in volume.spacing], "device": device}
    start = time.perf_counter()
    if method == "fullgrid":
        config = BoneConfig()
        energy, _, _ = build_energy(volume.array, volume.spacing, config)
        cut, stats = solve_full_grid(energy)
        mask = fill_cavities(cut)
        out["cut_energy"] = energy_of(cut, energy)
        out["graph_nodes"] = stats["graph_nodes"]
    else:
        config = BoneConfig(mode="banded" if method == "banded" else "exact")
        on_device = volume.with_array(to_device(volume.array, device))
        if device == "gpu":
            import cupy
            extract_bone(on_device, config)  # warm-up: kernels compiled, memory pool filled
            cupy.cuda.runtime.deviceSynchronize()
            start = time.perf_counter()
        result = extract_bone(on_device, config)
        mask = to_host(result.mask)
        out.update(graph_nodes=result.diagnostics["graph_nodes"], stages_s=result.diagnostics["timings_s"])
    out["time_s"] = round(time.perf_counter() - start, 3)
    if method != "fullgrid":
        # The energy of the whole volume (extract_bone solves a box around the bone), outside the timing.
        energy, _, _ = build_energy(volume.array, volume.spacing, config)
        out["cut_energy"] = energy_of(to_host(result.cut), energy)
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    out["peak_rss_before_mb"] = round(rss_before, 1)
    out["dice"] = round(dice(mask, truth > 0), 4)
    heads = [(truth == label) for label in (1, 3) if (truth == label).any()]
    out["head_solid"] = round(float(min(mask[h].mean() for h in heads)), 4) if heads else None
    sides = case.truth["sides"]
    out["joint_space_mm"] = [sides[s]["joint_space_mm"] for s in ("left", "right")]
    out["joint_open"] = [_components_separate(mask, truth, h, c) for h, c in ((1, 2), (3, 4))
                         if (truth == h).any() and (truth == c).any()]
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])

"""Thick slices of real CT: BE on slabs of the real abdominal series against its own thin-slice mask.

Run: ``.venv/bin/python -m benchmarks.bench_real_slabs [--factor 3]``; writes
``benchmarks/results/bench_real_slabs.json`` and ``.md``.

No phantom: the real abdominal DICOM series kept with the tests (1 x 1 x 2 mm, 20 slices;
``tests/data/README.md``). Every ``factor`` consecutive slices are averaged into one slab (the CT of a
reconstruction at ``factor`` times the slice thickness, up to the scanner's slice profile), BE runs on
the slabs, and its mask is compared with the majority of BE's own thin-slice mask over each slab's
slices: the bone a slab mostly holds, as read at the finer slices. The slabs start at each of the
first ``factor`` slices in turn (phases), so every slice falls at a slab's edge and at its centre.

This is agreement, not accuracy: the thin-slice mask has its own errors. It is the check on real bone
of any rule for the slice's partial volume: a phantom whose slices average a few point samples favours
rules fitted to that averaging, and such a rule must not lower this agreement (docs/bone_extraction.md,
"Limits seen", has the one that did).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from benchmarks.common import machine, markdown_table, write_results

SERIES = Path(__file__).resolve().parents[1] / "tests" / "data" / "dicom-abdomen"


def slabs_of(volume, factor: int, phase: int):
    """``volume`` with every ``factor`` slices from ``phase`` on averaged into one slab.

    Returns the slab volume and, per slab, the slice indices it averages (the slice axis is the axis
    of the largest spacing). The affine follows: the slice axis's column is scaled and the origin moves
    to the first slab's centre.
    """
    axis = int(np.argmax(volume.spacing))
    count = (volume.array.shape[axis] - phase) // factor
    kept = np.take(volume.array, np.arange(phase, phase + count * factor), axis=axis)
    moved = np.moveaxis(kept, axis, -1)
    slab = moved.reshape(moved.shape[:-1] + (count, factor)).mean(axis=-1)
    affine = np.array(volume.affine, dtype=float)
    affine[:3, 3] = affine[:3, 3] + affine[:3, axis] * (phase + (factor - 1) / 2.0)
    affine[:3, axis] *= factor
    spacing = list(volume.spacing)
    spacing[axis] *= factor
    array = np.ascontiguousarray(np.moveaxis(slab, -1, axis), dtype=np.float32)
    return dataclasses.replace(volume, array=array, spacing=tuple(spacing), affine=affine), axis, count


def majority_of(mask, axis: int, factor: int, phase: int, count: int):
    """The thin-slice ``mask`` read per slab: bone where most of the slab's slices are bone."""
    kept = np.take(mask, np.arange(phase, phase + count * factor), axis=axis)
    moved = np.moveaxis(kept, axis, -1)
    votes = moved.reshape(moved.shape[:-1] + (count, factor)).sum(axis=-1)
    return np.moveaxis(2 * votes > factor, -1, axis)


def run(factor: int) -> dict:
    """BE on the series and on its slabs at every phase; agreement per phase."""
    from thagpu import extract_bone, load_ct
    from thagpu.metrics import dice

    volume = load_ct(SERIES)
    thin = np.asarray(extract_bone(volume).mask)
    phases = []
    for phase in range(factor):
        start = time.perf_counter()
        slab_volume, axis, count = slabs_of(volume, factor, phase)
        mask = np.asarray(extract_bone(slab_volume).mask)
        reference = majority_of(thin, axis, factor, phase, count)
        phases.append({"phase": phase, "slabs": count, "slab_mm": round(float(slab_volume.spacing[axis]), 3),
                       "dice": round(float(dice(mask, reference)), 4),
                       "excess_voxels": int((mask & ~reference).sum()),
                       "missing_voxels": int((reference & ~mask).sum()),
                       "reference_voxels": int(reference.sum()), "seconds": round(time.perf_counter() - start, 2)})
        print(f"[phase {phase + 1}/{factor}] slabs of {phases[-1]['slab_mm']} mm: Dice {phases[-1]['dice']:.4f}, "
              f"excess {phases[-1]['excess_voxels']}, missing {phases[-1]['missing_voxels']}", flush=True)
    return {"series": "tests/data/dicom-abdomen", "spacing_mm": [round(float(s), 4) for s in volume.spacing],
            "factor": factor, "phases": phases, "mean_dice": round(float(np.mean([p["dice"] for p in phases])), 4)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--factor", type=int, default=3, help="thin slices per slab (odd, so that a majority exists)")
    args = parser.parse_args(argv)
    if args.factor < 3 or args.factor % 2 == 0:
        parser.error("--factor must be an odd number of slices, 3 or more")
    result = run(args.factor)
    table = "\n".join(["## Real CT at thick slices: BE on slabs against its own thin-slice mask", "",
                       f"Slabs of {args.factor} slices of {result['series']} ({result['spacing_mm']} mm); "
                       f"mean Dice {result['mean_dice']:.4f}.", "",
                       markdown_table(result["phases"], ["phase", "slabs", "slab_mm", "dice", "excess_voxels",
                                                         "missing_voxels", "reference_voxels", "seconds"])])
    write_results("bench_real_slabs", {"machine": machine(), **result}, table)
    print(table)


if __name__ == "__main__":
    main()

"""How much of the label error at coarse voxels is partial volume: ours against a perfect reader of it.

Run: ``.venv/bin/python -m benchmarks.bench_partial_volume [--quick] [--workers N]``; writes
``benchmarks/results/bench_partial_volume.json`` and ``.md``.

The truth labels say what lies at each voxel's centre. A voxel across a bone surface holds bone and
soft tissue, and its CT value is their average; at 3 mm voxels most of a thin-walled acetabulum's
voxels are such. The phantom knows each voxel's bone share (``make_phantom(bone_fraction=True)``, from
the samples the CT averages), so for the held-out phantoms of ``bench_accuracy`` (same seeds and
spacings) this reports, per case and side:

* ``bone_dice``: our bone mask against the truth; ``bone_dice_reader``: a perfect partial-volume reader
  (a voxel is bone when at least half of it is), against the same truth: the best a voxel-wise
  decision on exact bone shares could do under the centre convention;
* ``dice_acetabulum`` / ``dice_head``: ours; ``..._reader``: our label less its voxels that are less
  than half bone (the same regions, the partial-volume decision made perfectly);
* where our acetabulum's false voxels are: ``acet_fp_soft`` (no bone at all: soft tissue filled in),
  ``acet_fp_partial`` (some bone, less than half), ``acet_fp_mostly_bone``; and its missed voxels:
  ``acet_fn_unmasked`` (not in the bone mask) and ``acet_fn_other_label`` (in it, labelled otherwise:
  the split and the label's reach), of which ``acet_fn_beyond_reach`` lie beyond 1.5 times the
  measured head radius from the measured centre (the label's reach, so a radius measured short
  shrinks it: 1.5 times the radius error).
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np

from benchmarks.bench_accuracy import SPACINGS
from benchmarks.common import machine, markdown_table, write_results

#: The experiments: bench_accuracy's held-out seeds at its spacings (coarse ones: where partial volume is).
EXPERIMENTS = {
    "anatomic 0.8x0.8x3 mm": ("anatomic", 9000, SPACINGS["0.8x0.8x3 mm"]),
    "anatomic 3 mm": ("anatomic", 9000, SPACINGS["3 mm"]),
    "anatomic osteoporotic 0.8x0.8x3 mm": ("anatomic_osteoporotic", 9500, SPACINGS["0.8x0.8x3 mm"]),
}


def run_case(seed: int, preset: str, spacing) -> dict:
    """One phantom: our labels and a perfect partial-volume reader's, against the centre truth."""
    from thagpu import labels as schema
    from thagpu.afs import segment_hips
    from thagpu.bone import extract_bone
    from thagpu.metrics import dice
    from thagpu.phantom import make_phantom

    case = make_phantom(seed, size="small", preset=preset, spacing=spacing, bone_fraction=True)
    volume = case.to_volume()
    mask = np.asarray(extract_bone(volume).mask)
    labels, measurements = segment_hips(volume, mask)
    truth = case.canonical_labels()
    fraction = case.canonical(case.bone_fraction)
    mostly_bone = fraction >= 0.5

    def beyond_reach(selected, measured) -> int:
        """How many ``selected`` voxels lie farther from the measured head centre than the label's reach."""
        distance = np.linalg.norm(volume.index_to_ras(np.argwhere(selected)) - measured["head_center_mm"], axis=1)
        return int((distance > schema.ACETABULUM_RADIUS_FACTOR * measured["head_radius_mm"]).sum())

    row = {"case": case.case_id, "seed": seed, "shape": list(case.ct.shape),
           "bone_dice": dice(mask, truth > 0), "bone_dice_reader": dice(mostly_bone, truth > 0), "sides": []}
    for side, (head, cup) in schema.SIDE_LABELS.items():
        status = measurements["sides"][side]["status"]
        if status != "ok":
            row["sides"].append({"side": side, "status": status})
            continue
        ours, true_cup = labels == cup, truth == cup
        false, missed = ours & ~true_cup, true_cup & ~ours
        row["sides"].append({
            "side": side, "status": status, "acet_voxels": int(true_cup.sum()),
            "dice_acetabulum": dice(ours, true_cup), "dice_acetabulum_reader": dice(ours & mostly_bone, true_cup),
            "dice_head": dice(labels == head, truth == head),
            "dice_head_reader": dice((labels == head) & mostly_bone, truth == head),
            "acet_fp_soft": int((false & (fraction == 0)).sum()),
            "acet_fp_partial": int((false & (fraction > 0) & ~mostly_bone).sum()),
            "acet_fp_mostly_bone": int((false & mostly_bone).sum()),
            "acet_fn_unmasked": int((missed & ~mask).sum()), "acet_fn_other_label": int((missed & mask).sum()),
            "acet_fn_beyond_reach": beyond_reach(missed & mask, measurements["sides"][side])})
    return row


def _mean(values):
    values = [v for v in values if v is not None]
    return round(float(np.mean(values)), 4) if values else None


def summarise(cases: list) -> dict:
    sides = [s for c in cases for s in c["sides"] if s["status"] == "ok"]
    out = {"cases": len(cases), "ok_sides": len(sides),
           "mean_bone_dice": _mean([c["bone_dice"] for c in cases]),
           "mean_bone_dice_reader": _mean([c["bone_dice_reader"] for c in cases])}
    for key in ("dice_acetabulum", "dice_acetabulum_reader", "dice_head", "dice_head_reader"):
        out[f"ok_mean_{key}"] = _mean([s[key] for s in sides])
    errors = ("acet_fp_soft", "acet_fp_partial", "acet_fp_mostly_bone", "acet_fn_unmasked", "acet_fn_other_label",
              "acet_fn_beyond_reach")
    truth = sum(s["acet_voxels"] for s in sides)
    for key in errors:  # per 100 true acetabulum voxels
        out[f"{key}_per_100"] = round(100.0 * sum(s[key] for s in sides) / truth, 2) if truth else None
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 phantoms per experiment instead of 15 (5 osteoporotic)")
    parser.add_argument("--workers", type=int, default=2, help="cases run at once, each in its own process")
    args = parser.parse_args(argv)
    jobs = []
    for name, (preset, first, spacing) in EXPERIMENTS.items():
        count = 3 if args.quick else (5 if preset == "anatomic_osteoporotic" else 15)
        jobs += [(name, dict(seed=first + i, preset=preset, spacing=spacing)) for i in range(count)]
    results = [None] * len(jobs)
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = {pool.submit(run_case, **kwargs): i for i, (_, kwargs) in enumerate(jobs)}
        for done, future in enumerate(as_completed(futures), 1):
            i = futures[future]
            results[i] = dict(future.result(), experiment=jobs[i][0])
            print(f"[{done}/{len(jobs)} {time.perf_counter() - start:.0f} s] {jobs[i][0]} {results[i]['case']} "
                  f"bone {results[i]['bone_dice']:.3f} (reader {results[i]['bone_dice_reader']:.3f})", flush=True)
    experiments = {name: summarise([c for c in results if c["experiment"] == name]) for name in EXPERIMENTS}
    columns = ["experiment", "cases", "ok_sides", "mean_bone_dice", "mean_bone_dice_reader", "ok_mean_dice_head",
               "ok_mean_dice_head_reader", "ok_mean_dice_acetabulum", "ok_mean_dice_acetabulum_reader",
               "acet_fp_soft_per_100", "acet_fp_partial_per_100", "acet_fp_mostly_bone_per_100",
               "acet_fn_unmasked_per_100", "acet_fn_other_label_per_100", "acet_fn_beyond_reach_per_100"]
    table = "\n".join([
        "## Partial volume: our labels against a perfect reader of it", "",
        "`_reader`: a voxel is bone when at least half of it is (bone Dice), or our label less its voxels "
        "that are less than half bone (head, acetabulum). Acetabulum errors per 100 true acetabulum voxels "
        "of the `ok` sides.", "" + ("(quick)" if args.quick else ""), "",
        markdown_table([{"experiment": name, **values} for name, values in experiments.items()], columns)])
    write_results("bench_partial_volume", {"machine": machine(), "quick": args.quick, "experiments": experiments,
                                           "cases": results}, table)
    print(table)


if __name__ == "__main__":
    main()

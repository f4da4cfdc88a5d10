"""Where a phantom's rendered bone surfaces lie against its truth surface (docs/phantom.md, "Edges").

Run: ``.venv/bin/python tools/phantom_edge_bias.py [--preset anatomic] [--seed 9001] [--spacing 1]``.

Along each array axis, in both directions, every crossing of the truth from background into bone
with a thick cortex behind it (6 truth voxels of bone, the CT above 80 % of its peak for 4 voxels)
gives the position of the half maximum between the soft tissue outside and the cortex peak, in
voxels from the truth surface (half-way between the two voxel centres), positive inside the bone.
A scanner's edge response puts the surface at the half maximum: the median should be near 0.
"""

from __future__ import annotations

import argparse

import numpy as np


def edge_offsets(ct, truth, step: int = 5) -> dict:
    """Median half-maximum offset (voxels, + inside the bone) per axis and direction."""
    out = {}
    for axis in range(3):
        image, bone = np.moveaxis(ct, axis, 0), np.moveaxis(truth, axis, 0)
        for flip in (False, True):
            img_f, bone_f = (image[::-1], bone[::-1]) if flip else (image, bone)
            found = []
            for j in range(0, img_f.shape[1], step):
                for k in range(0, img_f.shape[2], step):
                    line, values = bone_f[:, j, k], img_f[:, j, k]
                    for e in np.flatnonzero(~line[:-1] & line[1:]):
                        if e < 8 or e + 8 >= len(line) or not line[e + 1:e + 7].all() or line[e - 6:e + 1].any():
                            continue
                        outside, peak = np.median(values[e - 6:e - 2]), values[e + 1:e + 5].max()
                        if peak - outside < 600 or not (values[e + 2:e + 6] > 0.8 * peak).all():
                            continue
                        half, profile = 0.5 * (outside + peak), values[e - 4:e + 5]
                        rising = [i for i in range(len(profile) - 1) if profile[i] < half <= profile[i + 1]]
                        if rising:
                            i = rising[-1]
                            found.append(e - 4 + i + (half - profile[i]) / (profile[i + 1] - profile[i]) - (e + 0.5))
            if found:
                out[f"axis {axis} {'-' if flip else '+'}"] = (len(found), round(float(np.median(found)), 3))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="anatomic")
    parser.add_argument("--seed", type=int, default=9001)
    parser.add_argument("--spacing", type=float, default=1.0)
    args = parser.parse_args(argv)
    from thagpu.phantom import make_phantom
    case = make_phantom(args.seed, size="small", preset=args.preset, spacing=(args.spacing,) * 3, header="RAS")
    ct = case.canonical(case.ct).astype(np.float32)
    for key, (n, median) in edge_offsets(ct, case.canonical_labels() > 0).items():
        print(f"{key}: {n} crossings, half maximum {median:+.3f} voxel from the truth surface")


if __name__ == "__main__":
    main()

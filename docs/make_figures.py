"""Regenerate the pictures in docs/ (run: .venv/bin/python docs/make_figures.py)."""

from pathlib import Path

from thagpu.phantom import make_phantom
from thagpu.qc import save_slices_png

HERE = Path(__file__).resolve().parent


def phantom_figure(seed=7, size="small", preset="hard"):
    case = make_phantom(seed, size=size, preset=preset)
    volume = case.to_volume()
    points, circles = {}, {}
    for side in ("left", "right"):
        truth = case.truth["sides"][side]
        centre = volume.ras_to_index([truth["head_center_mm"]])[0]
        points[f"{side} head"] = centre
        circles[f"{side} head"] = [(centre, truth["head_radius_mm"], "red")]
    title = (f"{case.case_id}: header {case.truth['header_orientation']}, spacing "
             f"{', '.join(f'{s:.2f}' for s in volume.spacing)} mm, pose {case.truth['pose']['rotation_deg_xyz']} deg")
    save_slices_png(HERE / f"phantom_{preset}.png", volume.array, case.canonical_labels(), volume.spacing, points,
                    views=("axial", "coronal"), circles=circles, title=title)


if __name__ == "__main__":
    phantom_figure()
    phantom_figure(seed=8, preset="implant")

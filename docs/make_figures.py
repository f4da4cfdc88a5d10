"""Regenerate the pictures in docs/ (run: .venv/bin/python docs/make_figures.py)."""

from pathlib import Path

import numpy as np

from thagpu.phantom import make_phantom
from thagpu.qc import save_slices_png

HERE = Path(__file__).resolve().parent
REAL_CT = Path("/work/shared/data/dicom-abdomen")
WINDOW = (-250.0, 1250.0)  # level 500, width 1500: bone and soft tissue in one picture


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


def _slices_through(volume, centre_ras):
    """Axial and coronal slices (canonical RAS, displayed anterior / superior up) through a point."""
    i, j, k = np.clip(np.round(volume.ras_to_index([centre_ras])[0]).astype(int), 0, np.array(volume.shape) - 1)
    return volume.array[:, :, k].T, volume.array[:, j, :].T, (i, j, k)


def _show(ax, image, spacing_xy, title, crop=None):
    extent = [0, image.shape[1] * spacing_xy[0], 0, image.shape[0] * spacing_xy[1]]
    ax.imshow(image, cmap="gray", vmin=WINDOW[0], vmax=WINDOW[1], origin="lower", extent=extent,
              interpolation="nearest")
    if crop is not None:
        (x0, x1), (y0, y1) = crop
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def anatomic_figure(seed=6, preset="anatomic_oa", out="phantom_anatomic.png"):
    """An anatomic phantom at 1 mm and at 3 mm next to a real CT, in one window (W 1500 / L 500).

    The real series (upper abdomen, no hip) shows real cancellous bone in its
    vertebral bodies; the phantom's femoral heads, acetabula and iliac wings
    can be compared with it for texture and HU by eye.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from thagpu import load_ct

    fine = make_phantom(seed, size="small", preset=preset, header="LPS", spacing=(1.0, 1.0, 1.0))
    coarse = make_phantom(seed, size="small", preset=preset, header="LPS", spacing=(3.0, 3.0, 3.0))
    fig, axes = plt.subplots(2, 4, figsize=(20, 10.5))
    side = "right"
    for col, case in ((0, fine), (2, coarse)):
        volume = case.to_volume()
        truth = case.truth["sides"][side]
        axial, coronal, (i, j, k) = _slices_through(volume, truth["head_center_mm"])
        sx, sy, sz = volume.spacing
        label = f"phantom {sx:.0f} mm ({case.truth['bone_quality']} bone, OA grade {truth['oa_grade']})"
        _show(axes[0, col], axial, (sx, sy), f"{label}: axial through the {side} head")
        _show(axes[0, col + 1], coronal, (sx, sz), f"{label}: coronal through the {side} head")
    # Zoom: the femoral head and acetabulum at 1 mm.
    volume = fine.to_volume()
    truth = fine.truth["sides"][side]
    axial, coronal, (i, j, k) = _slices_through(volume, truth["head_center_mm"])
    cx, cy, cz = i * volume.spacing[0], j * volume.spacing[1], k * volume.spacing[2]
    _show(axes[1, 0], axial, volume.spacing[:2], "phantom 1 mm: axial, head and acetabulum (70 mm)",
          crop=((cx - 35, cx + 35), (cy - 35, cy + 35)))
    _show(axes[1, 1], coronal, (volume.spacing[0], volume.spacing[2]), "phantom 1 mm: coronal, roof and head (70 mm)",
          crop=((cx - 35, cx + 35), (cz - 30, cz + 40)))
    if REAL_CT.exists():
        real = load_ct(REAL_CT)
        sx, sy, _ = real.spacing
        for col, z in ((2, 5), (3, 15)):
            image = real.array[:, :, z].T
            # The vertebral body: the brightest compact blob near the midline, posterior half.
            bone = real.array[:, :, z] > 200
            xs, ys = np.nonzero(bone[200:320, 150:300])
            vx, vy = (xs.mean() + 200) * sx, (ys.mean() + 150) * sy + 12.0
            _show(axes[1, col], image, (sx, sy), f"real CT (TotalSegmentator example), slice {z}: vertebra (70 mm)",
                  crop=((vx - 35, vx + 35), (vy - 35, vy + 35)))
    fig.suptitle(f"{fine.case_id}: anatomic phantom at 1 mm and 3 mm, and a real CT; window W 1500 / L 500 HU",
                 fontsize=12)
    fig.tight_layout()
    fig.savefig(HERE / out, dpi=70)
    plt.close(fig)


def kernel_figure(seed=9720, out="phantom_sharp_kernel.png"):
    """One patient reconstructed with the standard and with a sharp (bone) kernel, at 1 mm.

    The same head and acetabulum in a bone window and in a soft-tissue window: the sharp kernel's
    overshoot at the cortex, its undershoot beside it and its finer, stronger noise.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    windows = {"bone window W 1500 / L 500": WINDOW, "soft-tissue window W 400 / L 40": (-160.0, 240.0)}
    fig, axes = plt.subplots(2, 2, figsize=(11, 11))
    for col, preset in enumerate(("anatomic", "anatomic_sharp_kernel")):
        probe = make_phantom(seed, size="tiny", preset=preset, header="LPS")
        centre = probe.truth["sides"]["right"]["head_center_mm"]
        case = make_phantom(seed, size="small", preset=preset, header="LPS", spacing=(1.0, 1.0, 1.0),
                            fov_mm=(90.0, 90.0, 40.0), fov_center_mm=centre)
        volume = case.to_volume()
        axial, _, (i, j, k) = _slices_through(volume, centre)
        cx, cy = i * volume.spacing[0], j * volume.spacing[1]
        kernel = case.truth["reconstruction"]
        name = (f"{kernel['kernel']} kernel, noise {case.truth['noise_hu']:.0f} HU"
                + (f", edge gain {kernel['edge_gain']:.2f}" if kernel["kernel"] == "sharp" else ""))
        for row, (window_name, window) in enumerate(windows.items()):
            ax = axes[row, col]
            extent = [0, axial.shape[1] * volume.spacing[0], 0, axial.shape[0] * volume.spacing[1]]
            ax.imshow(axial, cmap="gray", vmin=window[0], vmax=window[1], origin="lower", extent=extent,
                      interpolation="nearest")
            ax.set_xlim(cx - 35, cx + 35)
            ax.set_ylim(cy - 35, cy + 35)
            ax.set_title(f"{name}; {window_name}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"seed {seed}, 1 mm, axial through the right femoral head (70 mm): standard and sharp kernel",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(HERE / out, dpi=70)
    plt.close(fig)


if __name__ == "__main__":
    phantom_figure()
    phantom_figure(seed=8, preset="implant")
    anatomic_figure()
    kernel_figure()

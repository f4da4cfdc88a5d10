"""Quality-control pictures: orthogonal slices through points of interest, labels overlaid.

Slices are drawn in radiological convention (patient right on the viewer's
left in axial and coronal views) with the true millimetre aspect ratio.
"""

from __future__ import annotations

import numpy as np

from ._atomic import atomic_path

__all__ = ["LABEL_COLOURS", "save_slices_png"]

#: RGB (0-255) per label value, shared with the exported colour tables.
LABEL_COLOURS = {
    1: (230, 159, 0),  # femoral head left: orange
    2: (0, 158, 115),  # acetabulum left: green
    3: (240, 228, 66),  # femoral head right: yellow
    4: (0, 114, 178),  # acetabulum right: blue
    5: (204, 121, 167),  # other bone: pink
}

_VIEWS = ("axial", "coronal", "sagittal")


def _view(array, index, view):
    """2-D slice (rows, columns) of a canonical (R, A, S) array and its (row, col) spacing axes."""
    i, j, k = index
    if view == "axial":  # rows: anterior at top; columns: patient right on the left
        return array[:, :, k].T[::-1, ::-1], (1, 0)
    if view == "coronal":  # rows: superior at top
        return array[:, j, :].T[::-1, ::-1], (2, 0)
    return array[i, :, :].T[::-1, :], (2, 1)  # sagittal: anterior on the right


def save_slices_png(path, image, labels, spacing, points, *, views=_VIEWS, circles=None, title=None,
                    window=(-300.0, 1500.0), dpi=80):
    """Write a PNG of slices through each point, with labels and optional circles overlaid.

    Parameters
    ----------
    path : str or Path
        Written atomically.
    image : (R, A, S) ndarray
        Canonical CT in HU.
    labels : (R, A, S) ndarray or None
        Canonical label map (values 0-5).
    spacing : tuple of 3 float
        mm per canonical axis.
    points : dict
        Row name -> canonical voxel index (3 numbers) the slices pass through.
    circles : dict, optional
        Row name -> list of (centre index (3,), radius mm, colour) drawn as
        the sphere's cross-section in each view.
    """
    # matplotlib's object API with an Agg canvas per figure, never pyplot: pyplot keeps global state
    # (the current figure, the figure manager) and is documented as not thread-safe, and a dataset
    # worker draws from several threads.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Circle

    image = np.asarray(image)
    rows = list(points)
    fig = Figure(figsize=(4.2 * len(views), 4.0 * max(1, len(rows))))
    FigureCanvasAgg(fig)
    axes = fig.subplots(max(1, len(rows)), len(views), squeeze=False)
    colours = np.zeros((256, 3), dtype=np.float32)
    alpha = np.zeros(256, dtype=np.float32)
    for value, rgb in LABEL_COLOURS.items():
        colours[value], alpha[value] = np.asarray(rgb) / 255.0, 0.45
    shape = np.asarray(image.shape)
    for r, name in enumerate(rows):
        index = np.clip(np.round(np.asarray(points[name], dtype=float)).astype(int), 0, shape - 1)
        for c, view in enumerate(views):
            ax = axes[r, c]
            img, (row_axis, col_axis) = _view(image, index, view)
            extent = (0, img.shape[1] * spacing[col_axis], 0, img.shape[0] * spacing[row_axis])
            # One RGB picture per panel, the labels blended in here: half the images for matplotlib
            # to composite, which is most of its drawing time.
            grey = np.clip((img.astype(np.float32) - window[0]) / (window[1] - window[0]), 0.0, 1.0)
            rgb = np.repeat(grey[..., None], 3, axis=2)
            if labels is not None:
                lab, _ = _view(np.asarray(labels), index, view)
                lab = lab.astype(np.uint8)
                a = alpha[lab][..., None]
                rgb = (1.0 - a) * rgb + a * colours[lab]
            ax.imshow(rgb, extent=extent, interpolation="nearest")
            for centre, radius, colour in (circles or {}).get(name, []):
                centre = np.asarray(centre, dtype=float)
                axes_3d = {"axial": 2, "coronal": 1, "sagittal": 0}[view]
                off = (centre[axes_3d] - index[axes_3d]) * spacing[axes_3d]
                if abs(off) >= radius:
                    continue
                cut = np.sqrt(radius ** 2 - off ** 2)
                # Position in the flipped display coordinates of _view.
                col = centre[col_axis] * spacing[col_axis]
                row = centre[row_axis] * spacing[row_axis]
                if view in ("axial", "coronal"):
                    col = extent[1] - col - spacing[col_axis]
                ax.add_patch(Circle((col + spacing[col_axis] / 2, row + spacing[row_axis] / 2), cut,
                                        fill=False, color=colour, lw=1.2))
            ax.set_title(f"{name}: {view}", fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
            if view in ("axial", "coronal"):
                ax.text(0.02, 0.02, "R", color="w", transform=ax.transAxes, fontsize=9)
                ax.text(0.95, 0.02, "L", color="w", transform=ax.transAxes, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, pil_kwargs={"compress_level": 1})  # zlib's fastest: ~2x the bytes, a fraction of the time
    return path

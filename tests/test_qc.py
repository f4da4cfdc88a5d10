"""The QC picture: CT in a grey window with the labels blended in their colours."""

import numpy as np

from thagpu.qc import LABEL_COLOURS, save_slices_png


def test_labels_are_blended_over_the_windowed_ct(tmp_path):
    from matplotlib.image import imread

    image = np.full((40, 40, 20), -1000.0, dtype=np.float32)  # air: black in the window
    image[5:35, 5:35, :] = 1500.0  # at the window's top: white
    labels = np.zeros(image.shape, dtype=np.uint8)
    labels[10:30, 10:30, :] = 3  # femoral head right, over the white
    path = save_slices_png(tmp_path / "qc.png", image, labels, (1.0, 1.0, 1.0), {"centre": (20, 20, 10)},
                           views=("axial",))
    pixels = imread(path)[..., :3]
    blend = 0.55 * np.ones(3) + 0.45 * np.asarray(LABEL_COLOURS[3]) / 255.0  # label over white
    colours = pixels.reshape(-1, 3)
    blended = np.all(np.abs(colours - blend) < 0.02, axis=1).sum()
    # The label covers a quarter of the panel (some ten thousand pixels at 80 dpi).
    assert blended > 2000, f"only {blended} pixels in the label's blended colour"


def test_pictures_drawn_from_threads_match_serial_ones_and_pyplot_is_never_loaded(tmp_path):
    """A dataset worker draws QC pictures from several threads: each figure has its own Agg canvas,
    none goes through pyplot's global state (documented as not thread-safe)."""
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(0)
    cases = []
    for k in range(6):
        image = rng.normal(0, 200, (30, 30, 16)).astype(np.float32)
        labels = np.zeros(image.shape, np.uint8)
        labels[5 + k:20 + k, 8:22, 4:12] = 1 + k % 5
        cases.append((image, labels))

    def draw(k, folder):
        image, labels = cases[k]
        return save_slices_png(folder / f"{k}.png", image, labels, (1.0, 1.0, 2.0), {"c": (15, 15, 8)},
                               circles={"c": [((15, 15, 8), 6.0, "yellow")]}, title=f"case {k}").read_bytes()

    (tmp_path / "serial").mkdir()
    (tmp_path / "threads").mkdir()
    serial = [draw(k, tmp_path / "serial") for k in range(len(cases))]
    with ThreadPoolExecutor(6) as pool:
        threaded = list(pool.map(lambda k: draw(k, tmp_path / "threads"), range(len(cases))))
    assert threaded == serial
    code = ("import sys, numpy as np; from thagpu.qc import save_slices_png; "
            f"save_slices_png({str(tmp_path / 'p.png')!r}, np.zeros((8, 8, 8)), None, (1, 1, 1), {{'c': (4, 4, 4)}}); "
            "print('matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

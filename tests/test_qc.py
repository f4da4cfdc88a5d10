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

"""The GPU path of BE and AFS, run without a GPU through a strict stand-in for CuPy (``tests/fake_cupy.py``).

The ``gpu``-marked parity tests need a GPU, which CI never has. Here they run in a subprocess where
``cupy`` and ``cupyx.scipy.ndimage`` are the stand-in, whose arrays refuse to mix with NumPy arrays as
CuPy's do: a NumPy array slipped into the GPU path (a filter's weights, a structure, an operand), or a
device array converted to NumPy implicitly, fails here instead of on a lent GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fake_cupy

ROOT = Path(__file__).resolve().parents[1]


def _with_stand_in(script: str, *args: str) -> subprocess.CompletedProcess:
    """``python -c script args`` in a subprocess whose CuPy is the stand-in (installed first)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), str(ROOT)]))
    return subprocess.run([sys.executable, "-c", "import fake_cupy; fake_cupy.install(); " + script, *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_the_stand_in_refuses_what_cupy_refuses():
    device = fake_cupy.ndarray(np.arange(4, dtype=np.float32))
    host = np.ones(4, dtype=np.float32)
    with pytest.raises(TypeError):
        device + host  # an operation mixing a device and a host array
    with pytest.raises(TypeError):
        np.where(device > 1, device, host)
    with pytest.raises(TypeError):
        np.asarray(device)  # implicit conversion to the host
    with pytest.raises(TypeError):  # host weights to cupyx.scipy.ndimage (the bug of 2026-12-04)
        fake_cupy._ndimage_attribute("correlate1d")(device, np.array([-0.5, 0.0, 0.5], dtype=np.float32))
    with pytest.raises(TypeError):
        fake_cupy.ascontiguousarray(host)
    # What CuPy allows: scalars, device operands, explicit copies.
    total = (device * np.float32(2) + device).sum()
    assert type(total).__module__ == "cupy" and float(total) == pytest.approx(18.0)
    np.testing.assert_array_equal(device.get(), np.arange(4, dtype=np.float32))
    weights = fake_cupy.asarray(np.array([0.0, 1.0, 0.0], dtype=np.float32))
    np.testing.assert_array_equal(fake_cupy._ndimage_attribute("correlate1d")(device, weights).get(), device.get())


@pytest.mark.slow
def test_gpu_parity_tests_pass_on_the_cpu_through_the_stand_in():
    result = _with_stand_in("import sys, pytest; "
                            "sys.exit(pytest.main(['-q', '-m', 'gpu', '-p', 'no:cacheprovider', 'tests/test_gpu_parity.py']))")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "3 passed" in result.stdout  # every test ran (on "cupy" arrays: they assert it), none skipped


@pytest.mark.slow
def test_thagpu_run_on_the_gpu_path_writes_the_cpu_labels(tmp_path):
    """`thagpu run --device gpu` end to end (reading, BE, AFS, QC picture, writing) on the stand-in."""
    import nibabel as nib

    from thagpu.phantom import make_phantom, write_phantom

    ct = write_phantom(make_phantom(4001, size="small", preset="hard"), tmp_path / "in")["ct"]
    script = ("import sys; from thagpu.cli import main; "
              "main(['run', sys.argv[1], '--out', sys.argv[2], '--device', sys.argv[3]])")
    outputs = {}
    for device in ("gpu", "cpu"):
        out = tmp_path / device
        result = _with_stand_in(script, str(ct), str(out), device)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        (case,) = out.iterdir()
        assert (case / "qc.png").stat().st_size > 0
        outputs[device] = case
    measured = json.loads((outputs["gpu"] / "measurements.json").read_text())
    assert measured["device"] == "gpu"
    gpu_labels = np.asarray(nib.load(outputs["gpu"] / "labels.nii.gz").dataobj)
    cpu_labels = np.asarray(nib.load(outputs["cpu"] / "labels.nii.gz").dataobj)
    assert (gpu_labels > 0).sum() > 10000
    np.testing.assert_array_equal(gpu_labels, cpu_labels)


def test_bincount_of_nothing_is_zeros_on_both_devices():
    """CuPy's bincount raises on an empty array (its output is sized by ``int(cupy.max(x))``); the
    stand-in does too, and ``thagpu.device.bincount`` gives ``minlength`` zeros instead."""
    from thagpu.device import bincount
    empty = np.zeros(0, dtype=np.int32)
    with pytest.raises(ValueError):
        fake_cupy._bincount(fake_cupy.asarray(empty), minlength=3)
    np.testing.assert_array_equal(bincount(empty, minlength=3), [0, 0, 0])
    assert bincount(empty, weights=np.zeros(0), minlength=2).dtype == np.float64
    np.testing.assert_array_equal(bincount(np.array([0, 2, 2]), minlength=4), [1, 0, 2, 0])

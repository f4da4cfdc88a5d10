"""The package's layering: one backend module, shared helpers below the stages that use them."""

import ast
from pathlib import Path

import thagpu.device
import thagpu.kernels._common as kernels_common

ROOT = Path(__file__).resolve().parents[1]
BACKEND = {"to_host", "is_cupy", "is_device_array", "array_kind", "get_array_module", "to_device"}


def _modules():
    for folder in (ROOT / "thagpu", ROOT / "kernels"):
        yield from folder.rglob("*.py")


def test_only_the_device_module_defines_the_backend_helpers():
    defined = {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and node.name in BACKEND and node.col_offset == 0:
                defined.setdefault(node.name, []).append(path.relative_to(ROOT).as_posix())
    assert defined and all(paths == ["thagpu/device.py"] for paths in defined.values()), defined
    assert kernels_common.to_host is thagpu.device.to_host


def test_helpers_shared_by_be_and_afs_live_below_both_stages():
    """AFS takes its ndimage helpers from thagpu.morphology, not from inside bone/."""
    assert not (ROOT / "thagpu" / "bone" / "morphology.py").exists()
    for path in (ROOT / "thagpu" / "afs").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        modules = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        assert not any(m.startswith("bone.morphology") for m in modules), path

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


def test_every_compiled_loop_releases_the_gil():
    """A dataset worker runs cases on threads beside each other: a compiled loop that holds the GIL
    (numba's default) makes them take turns. Every numba.njit dispatcher of the package has nogil."""
    import importlib
    import pkgutil

    import numba
    from numba.core.registry import CPUDispatcher

    import thagpu
    import thagpu.kernels  # the top-level kernels/ folder, installed as thagpu.kernels
    dispatchers = {}
    packages = [*pkgutil.walk_packages(thagpu.__path__, "thagpu."),
                *pkgutil.walk_packages(thagpu.kernels.__path__, "thagpu.kernels.")]
    for info in packages:
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if isinstance(value, CPUDispatcher) and value.__module__ == module.__name__:
                dispatchers[f"{info.name}.{name}"] = value
    assert {"thagpu.afs.fit._irls_sphere", "thagpu.bone.refine._box_extremes_at"} <= set(dispatchers)
    assert any(name.startswith("thagpu.kernels.") for name in dispatchers), sorted(dispatchers)
    held = sorted(name for name, d in dispatchers.items() if not d.targetoptions.get("nogil"))
    assert not held, f"compiled without nogil=True: {held}"
    assert numba.njit(lambda x: x).targetoptions.get("nogil") is None  # the check reads a real option

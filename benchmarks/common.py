"""Shared helpers of the benchmark scripts: machine facts, peak memory, result files."""

from __future__ import annotations

import json
import os
import platform
import resource
import shlex
import subprocess
import sys
from pathlib import Path

from thagpu._atomic import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    """CPU, GPU and library versions, for the record."""
    import numpy
    import scipy
    try:
        import SimpleITK
        simpleitk = SimpleITK.__version__
    except ImportError:  # not carried to a GPU machine
        simpleitk = None

    info = {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
            "numpy": numpy.__version__, "scipy": scipy.__version__, "SimpleITK": simpleitk, **code_version()}
    try:
        import maxflow
        info["PyMaxflow"] = getattr(maxflow, "__version__", "?")
    except ImportError:
        pass
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from thagpu.device import gpu_available
    if gpu_available():
        import cupy
        info["gpu"] = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
        info["cupy"] = cupy.__version__
    return info


def code_version() -> dict:
    """The commit the code runs at (``-dirty`` with uncommitted changes) and the date, for the record.

    Changed result files (``benchmarks/results``, written by an earlier benchmark in the same
    checkout) are not code and do not make it dirty. ``THAGPU_COMMIT``, where set, names the commit
    instead: a lent device machine receives the working tree without its ``.git``.
    """
    import datetime
    root = Path(__file__).resolve().parents[1]
    commit = os.environ.get("THAGPU_COMMIT") or _git_commit(root)
    return {"commit": commit, "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")}


def _git_commit(root: Path):
    """``git rev-parse --short HEAD`` of ``root``, ``-dirty`` with uncommitted code; None without git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)benchmarks/results"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
        commit += "-dirty" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_isolated(module: str, *args: str, timeout: float = 3600) -> dict:
    """Run ``python -m module args`` in a fresh process (own peak memory); it prints one JSON line last."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    result = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                            timeout=timeout, env=env, cwd=Path(__file__).resolve().parents[1])
    if result.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def invocation() -> str | None:
    """``python -m benchmarks.NAME ARGS`` as this process was started, or None when it was not a benchmark."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is None or script.parent.name != "benchmarks" or script.suffix != ".py":
        return None
    return shlex.join(["python", "-m", f"benchmarks.{script.stem}", *sys.argv[1:]])


def write_results(name: str, payload: dict, table: str, folder: Path | None = None) -> tuple:
    """Write ``<folder>/<name>.json`` and ``<folder>/<name>.md`` atomically (``folder``: ``results/``).

    The JSON records the command that made it (``command``) unless the payload names one.
    """
    command = invocation()
    if command and "command" not in payload:
        payload = {**payload, "command": command}
    folder = RESULTS if folder is None else Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    json_path = atomic_write_text(folder / f"{name}.json", json.dumps(payload, indent=2) + "\n")
    md_path = atomic_write_text(folder / f"{name}.md", table + "\n")
    return json_path, md_path


def markdown_table(rows: list, columns: list) -> str:
    def fmt(value):
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)

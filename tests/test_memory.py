"""Host memory: freed temporaries reused rather than faulted in afresh (thagpu/memory.py)."""

import subprocess
import sys

from thagpu.memory import _glibc

#: Ten 200 MB temporaries in turn, counting the process's minor page faults.
_FAULTS = """
import resource, numpy as np, sys
from thagpu.memory import keep_freed_memory, release_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
a = np.ones(50_000_000, np.float32); del a
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    a = np.ones(50_000_000, np.float32); del a
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
release_freed_memory()
print(kept, faults)
"""


def _faults(mode: str, env=None):
    out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True,
                         env=env, timeout=120).stdout.split()
    return out[0] == "True", int(out[1])


def test_kept_memory_is_reused_instead_of_faulted_in_again():
    kept, faults_kept = _faults("keep")
    if _glibc() is None:  # another C library: the setting is not made, and says so
        assert not kept
        return
    plain_kept, faults_plain = _faults("plain")
    assert kept and not plain_kept
    # Plain glibc maps each 200 MB block afresh (thousands of faults, even with huge pages); kept, the
    # second block onwards reuses the first one's memory.
    assert faults_kept * 5 < faults_plain, (faults_kept, faults_plain)


def test_the_setting_can_be_turned_off():
    import os
    env = dict(os.environ, THAGPU_KEEP_FREED_MEMORY="0")
    kept, _ = _faults("keep", env=env)
    assert not kept


_HUGE_PAGES = """
import numpy as np
from thagpu.memory import keep_freed_memory
core = getattr(np, "_core", None) or np.core  # NumPy 2 names it _core, 1.x core
before = core.multiarray._get_madvise_hugepage()
keep_freed_memory()
print(before, core.multiarray._get_madvise_hugepage())
"""


def _numpy_huge_pages(**env_vars):
    import os
    env = {k: v for k, v in os.environ.items() if k not in ("NUMPY_MADVISE_HUGEPAGE", "THAGPU_KEEP_FREED_MEMORY")}
    out = subprocess.run([sys.executable, "-c", _HUGE_PAGES], capture_output=True, text=True, check=True,
                         env=dict(env, **env_vars), timeout=120).stdout.split()
    return out[0] == "True", out[1] == "True"


def test_numpy_stops_advising_huge_pages_where_freed_memory_is_kept():
    # Under defrag=madvise, faults in regions so advised stall on memory compaction (thagpu/memory.py).
    before, after = _numpy_huge_pages()
    if _glibc() is None:
        assert after == before
        return
    assert not after
    # A user's own choice stands, and the whole setting can be turned off.
    assert _numpy_huge_pages(NUMPY_MADVISE_HUGEPAGE="1") == (True, True)
    assert _numpy_huge_pages(THAGPU_KEEP_FREED_MEMORY="0") == (before, before)

"""What the C and C++ libraries under SimpleITK print, kept out of the terminal.

MetaIO, niftilib and GDCM write some of their complaints straight to the
process's standard error (``std::cerr``, ``fprintf(stderr)``), below Python,
before ITK raises its own exception: a user would see a stray line such as
``MetaImage: Read: Cannot open data file`` above thagpu's one-line error.
:func:`native_stderr` points file descriptor 2 at a temporary file while a
read runs and hands back what was written, so that the caller can put it in
its error message; with ITK's warnings on (``--verbose``, ``--debug``) the
text is written on to stderr as well.

The redirect is process-wide and SimpleITK releases the GIL while it reads,
so it is taken only while the process runs a single thread (``thagpu run``
without a live progress display; the idle threads of the filter pool of
:mod:`thagpu.morphology` aside): with other threads (a progress bar's
refresh, a Dask worker's pool) their output would land in the capture, and
stderr is left as it is.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading

from ._lazy import sitk

__all__ = ["native_stderr", "native_note"]

log = logging.getLogger("thagpu.io")

#: Longest native text kept in an error message (characters).
MAX_NOTE_CHARS = 200


def _redirect():
    """(saved descriptor 2, sink file) with descriptor 2 pointing at the sink, or None where it cannot be."""
    from ..morphology import POOL_THREAD_NAME
    # The filter pool's threads (thagpu.morphology) do not count: they wait, idle, between filters,
    # and run only for a thread that called one, which is then not reading here.
    if any(t is not threading.current_thread() and not t.name.startswith(POOL_THREAD_NAME)
           for t in threading.enumerate()):
        return None
    saved = sink = None
    try:
        if sys.stderr is not None:
            sys.stderr.flush()
        saved = os.dup(2)
        sink = tempfile.TemporaryFile()
        os.dup2(sink.fileno(), 2)
        return saved, sink
    except (OSError, ValueError, AttributeError):
        if saved is not None:
            os.close(saved)
        if sink is not None:
            sink.close()
        return None


def _warnings_shown() -> bool:
    try:
        return bool(sitk.ProcessObject.GetGlobalWarningDisplay())
    except Exception:  # SimpleITK absent or too old: keep the text in the capture only
        return False


@contextlib.contextmanager
def native_stderr(captured: list):
    """Capture what native code writes to file descriptor 2 inside the block into ``captured``.

    The text (stripped, one entry per block that wrote something) is appended to ``captured`` and
    logged at debug level when the block ends, whether it raised or not, and written on to stderr
    when ITK's warnings are on. With other threads running, or where descriptor 2 cannot be
    redirected, nothing is redirected.
    """
    redirect = _redirect()
    if redirect is None:
        yield
        return
    saved, sink = redirect
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        with sink:
            sink.seek(0)
            raw = sink.read()
        text = raw.decode("utf-8", errors="replace").strip()
        if text:
            captured.append(text)
            log.debug("native library output: %s", text)
            if _warnings_shown():
                os.write(2, raw)


def native_note(captured: list) -> str:
    """`` (the library said: ...)`` for an error message, on one line; empty when nothing was captured."""
    text = " ".join(" ".join(captured).split())
    if not text:
        return ""
    if len(text) > MAX_NOTE_CHARS:
        text = text[:MAX_NOTE_CHARS - 3] + "..."
    return f" (the library said: {text})"

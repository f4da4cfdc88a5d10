"""What the C and C++ libraries under SimpleITK print, kept out of the terminal.

MetaIO, niftilib and GDCM write some of their complaints straight to the
process's standard error (``std::cerr``, ``fprintf(stderr)``), below Python,
before ITK raises its own exception: a user would see a stray line such as
``MetaImage: Read: Cannot open data file`` above thagpu's one-line error.
:func:`native_stderr` points file descriptor 2 at a temporary file while a
read runs and hands back what was written, so that the caller can put it in
its error message or the debug log.

The redirect is process-wide, so it is taken only on the main thread (the
command line's reads): a worker thread of a Dask process leaves stderr as
it is rather than swallow what other threads print meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading

__all__ = ["native_stderr", "native_note"]

log = logging.getLogger("thagpu.io")

#: Longest native text kept in an error message (characters).
MAX_NOTE_CHARS = 200


@contextlib.contextmanager
def native_stderr(captured: list):
    """Capture what native code writes to file descriptor 2 inside the block into ``captured``.

    The text (stripped, one entry per block that wrote something) is appended to ``captured`` and
    logged at debug level when the block ends, whether it raised or not. On a thread other than the
    main one, or where descriptor 2 cannot be duplicated, nothing is redirected.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", errors="replace").strip()
            if text:
                captured.append(text)
                log.debug("native library output: %s", text)


def native_note(captured: list) -> str:
    """`` (the library said: ...)`` for an error message, on one line; empty when nothing was captured."""
    text = " ".join(" ".join(captured).split())
    if not text:
        return ""
    if len(text) > MAX_NOTE_CHARS:
        text = text[:MAX_NOTE_CHARS - 3] + "..."
    return f" (the library said: {text})"

"""Small statistics shared by the benchmarks: the mean of a few seeds with its 95 % interval."""

from __future__ import annotations

import numpy as np

__all__ = ["t_interval"]


def t_interval(values) -> tuple:
    """(mean, half-width of the two-sided 95 % Student-t interval) of ``values``.

    Parameters
    ----------
    values : (n,) array_like of float
        One figure per seed (or per any independent repeat).

    Returns
    -------
    mean : float
    half : float or None
        ``t(0.975, n - 1) x s / sqrt(n)`` with ``s`` the sample standard deviation; None for n < 2
        (one value has no interval).

    Examples
    --------
    >>> round(t_interval([1.0, 2.0, 3.0])[1], 3)
    2.484
    >>> t_interval([0.5])
    (0.5, None)
    """
    from scipy import stats
    values = np.asarray(values, dtype=float)
    if values.size < 2:
        return float(values.mean()), None
    half = stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size)
    return float(values.mean()), float(half)

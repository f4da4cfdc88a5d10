"""Clinical angles of the hip in patient (RAS) space, radiographic definitions (Murray 1993).

* Inclination: angle between the longitudinal axis and the acetabular opening
  axis projected on the coronal plane.
* Anteversion: angle between the opening axis and the coronal plane.
* Centre-edge angle (Wiberg): in the coronal plane through the head centre,
  the angle between the vertical and the line from the head centre to the
  lateral edge of the acetabular roof.
"""

from __future__ import annotations

import numpy as np

from .boundary import fibonacci_directions

__all__ = ["radiographic_angles", "rim_plane", "center_edge_angle"]


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def radiographic_angles(axis) -> tuple:
    """Radiographic inclination and anteversion (degrees) of an opening axis in RAS.

    The axis points out of the socket; inclination is measured in the coronal
    plane from the inferior longitudinal axis, anteversion out of the coronal
    plane (positive anterior).
    """
    axis = _unit(axis)
    anteversion = np.degrees(np.arcsin(np.clip(axis[1], -1.0, 1.0)))
    inclination = np.degrees(np.arctan2(abs(axis[0]), -axis[2]))
    return float(inclination), float(anteversion)


def _separation_errors(axes, directions, covered):
    """Fewest misclassified lines of a rim plane ``d . a <= t`` (covered side) per axis, and that t."""
    projections = directions @ axes.T  # (D, A)
    order = np.argsort(projections, axis=0)
    sorted_covered = covered[order]  # per axis, lines from the socket's pole outwards
    # Threshold after the first m lines: uncovered among them + covered beyond them.
    errors = np.cumsum(~sorted_covered, axis=0) + (sorted_covered.sum(axis=0)[None, :]
                                                   - np.cumsum(sorted_covered, axis=0))
    cut = np.argmin(errors, axis=0)
    columns = np.arange(axes.shape[0])
    sorted_projections = np.take_along_axis(projections, order, axis=0)
    after = np.minimum(cut + 1, len(directions) - 1)
    thresholds = 0.5 * (sorted_projections[cut, columns] + sorted_projections[after, columns])
    return errors[cut, columns], thresholds


def rim_plane(directions, covered) -> tuple:
    """The acetabular rim plane from the lines the socket covers: its axis (out of the socket) and offset.

    The plane ``d . a = t`` that best separates the lines covered by the socket
    (``d . a <= t``) from the others, counting misclassified lines, is searched
    over axes within 40 degrees of the mean uncovered-minus-covered direction,
    then refined to about half a degree. Counting errors, rather than
    averaging directions, keeps stray lines (the femoral neck, a rim
    osteophyte, the pubis next to the socket) from tilting the axis.

    Parameters
    ----------
    directions : (D, 3) array_like
        Unit line directions, nearly uniform on the sphere.
    covered : (D,) bool array_like

    Returns
    -------
    axis : (3,) ndarray
        Unit opening axis, pointing out of the socket.
    threshold : float
        ``t``: the covered side is ``d . axis <= t``.
    error_fraction : float
        Share of lines the plane misclassifies: a few per cent around a
        socket; much more where the coverage was not seen as a cap.

    Raises
    ------
    ValueError
        When all lines or none are covered.
    """
    directions = np.asarray(directions, dtype=np.float64)
    covered = np.asarray(covered, dtype=bool)
    if covered.all() or not covered.any():
        raise ValueError("the rim plane needs covered and uncovered lines")
    axis = _unit(directions[~covered].mean(axis=0) - directions[covered].mean(axis=0))
    threshold, fewest = 0.0, len(directions)
    for count, reach_deg in ((4000, 40.0), (40000, 4.0)):
        axes = fibonacci_directions(count)
        axes = axes[axes @ axis >= np.cos(np.radians(reach_deg))]
        errors, thresholds = _separation_errors(axes, directions, covered)
        best = errors == errors.min()
        axis = _unit(axes[best].mean(axis=0))
        threshold, fewest = float(np.mean(thresholds[best])), int(errors.min())
    return axis, threshold, fewest / len(directions)


def center_edge_angle(covered_directions, lateral_sign: float, *, coronal_tolerance: float = 0.2) -> float:
    """Wiberg's centre-edge angle (degrees) from the covered directions (unit, RAS).

    Of the covered directions near the coronal plane (``|y| <= coronal_tolerance``)
    the one reaching farthest laterally from the vertical marks the lateral
    edge of the roof; the angle is positive when that edge is lateral to the
    head centre. NaN when no covered direction lies near the coronal plane.

    Parameters
    ----------
    lateral_sign : float
        +1 for the patient's right hip (lateral is +x in RAS), -1 for the left.
    """
    d = np.asarray(covered_directions, dtype=np.float64)
    near = d[(np.abs(d[:, 1]) <= coronal_tolerance) & (d[:, 2] > 0)]
    if len(near) == 0:
        return float("nan")
    return float(np.degrees(np.max(np.arctan2(lateral_sign * near[:, 0], near[:, 2]))))

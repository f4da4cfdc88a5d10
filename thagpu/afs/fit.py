"""Robust sphere fits: the femoral head and the concentric socket.

Boundary points along radial lines include outliers (the fovea, osteophytes,
the neck, the far cortex of the socket); Tukey's biweight in an iteratively
reweighted Gauss-Newton fit gives them zero weight once they are more than a
few millimetres off the sphere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

__all__ = ["SphereFit", "fit_sphere", "fit_sphere_with_offset", "algebraic_sphere"]


@dataclass(frozen=True)
class SphereFit:
    """A fitted sphere in millimetres.

    Attributes
    ----------
    center : (3,) ndarray
    radius : float
    rms : float
        Root mean square of the inliers' distances to the sphere.
    inliers : (N,) bool ndarray
        Points with a non-zero final weight.
    """

    center: np.ndarray
    radius: float
    rms: float
    inliers: np.ndarray

    def residuals(self, points) -> np.ndarray:
        """Signed distance of each point to the sphere (positive outside)."""
        return np.linalg.norm(np.asarray(points) - self.center, axis=1) - self.radius


def algebraic_sphere(points, weights=None):
    """Least-squares sphere through points from the linear form |p|^2 = 2 c.p + k.

    Returns ``(center, radius)``; a good start for the geometric fit.
    """
    points = np.asarray(points, dtype=np.float64)
    w = np.ones(len(points)) if weights is None else np.asarray(weights, dtype=np.float64)
    a = np.column_stack([2.0 * points, np.ones(len(points))]) * np.sqrt(w)[:, None]
    b = (points ** 2).sum(axis=1) * np.sqrt(w)
    solution, *_ = np.linalg.lstsq(a, b, rcond=None)
    center = solution[:3]
    return center, float(np.sqrt(max(solution[3] + center @ center, 0.0)))


@numba.njit(cache=True, nogil=True)
def _irls_sphere(points, center, radius, scale, fixed_center, iterations):
    """IRLS core of :func:`fit_sphere`: returns ``(center, radius, ok)``; ``ok`` is False when
    the weights vanish (too few points within ``scale`` of the sphere).

    Compiled: a fit takes up to ``iterations`` reweighting steps over a few hundred points, and a
    volume fits a few hundred spheres (each head candidate, from several starting spheres), so
    the per-step overhead of NumPy calls would dominate. Gauss-Newton on (cx, cy, cz, r) with the
    Jacobian J = [-u, -1] (u: unit offsets from the centre), solved from the 4 x 4 normal equations
    J'WJ delta = -J'W e = [u'We, sum(We)] (e: signed distances to the sphere).
    """
    n = points.shape[0]
    center = center.copy()
    minimum_weight = 1.0 if fixed_center else 4.0
    unit = np.empty(3)
    for _ in range(iterations):
        normal = np.zeros((4, 4))
        rhs = np.zeros(4)
        weighted_dist = 0.0
        for i in range(n):
            ox = points[i, 0] - center[0]
            oy = points[i, 1] - center[1]
            oz = points[i, 2] - center[2]
            d = math.sqrt(ox * ox + oy * oy + oz * oz)
            u = (d - radius) / scale
            if not abs(u) < 1.0:  # beyond the scale, or NaN: no weight
                continue
            w = (1.0 - u * u) ** 2  # Tukey's biweight
            inv = 1.0 / max(d, 1e-9)
            unit[0], unit[1], unit[2] = ox * inv, oy * inv, oz * inv
            weighted_dist += w * d
            we = w * (d - radius)
            for a in range(3):
                for b in range(3):
                    normal[a, b] += w * unit[a] * unit[b]
                normal[a, 3] += w * unit[a]
                rhs[a] += we * unit[a]
            normal[3, 3] += w
            rhs[3] += we
        total = normal[3, 3]
        if total < minimum_weight:
            return center, radius, False
        if fixed_center:
            new_radius = weighted_dist / total
            step = abs(new_radius - radius)
            radius = new_radius
        else:
            for a in range(3):
                normal[3, a] = normal[a, 3]
            if abs(np.linalg.det(normal)) > 1e-12:
                delta = np.linalg.solve(normal, rhs)
            else:  # points on a plane or a line: the minimum-norm step
                delta = np.linalg.lstsq(normal, rhs)[0]
            for a in range(3):
                center[a] += delta[a]
            radius += delta[3]
            step = math.sqrt(delta[0] ** 2 + delta[1] ** 2 + delta[2] ** 2 + delta[3] ** 2)
        if step < 1e-4:
            break
    return center, radius, True



def fit_sphere(points, *, center=None, radius=None, scale_mm: float = 2.0, fixed_center: bool = False,
               iterations: int = 20) -> SphereFit:
    """Robust geometric sphere fit (IRLS with Tukey's biweight, Gauss-Newton steps).

    Parameters
    ----------
    points : (N, 3) array_like
        Boundary points in mm, N >= 4 (N >= 1 with ``fixed_center``).
    center, radius : optional
        Starting sphere; the algebraic fit of all points when omitted.
    scale_mm : float
        Points farther than this from the current sphere get no weight.
    fixed_center : bool
        Fit only the radius around ``center`` (the concentric socket).
    iterations : int
        Upper bound on reweighting steps.

    Raises
    ------
    ValueError
        Too few points, or every point rejected.
    """
    points = np.asarray(points, dtype=np.float64)
    if len(points) < (1 if fixed_center else 4):
        raise ValueError(f"too few points for a sphere fit ({len(points)})")
    if center is None:
        if fixed_center:
            raise ValueError("fixed_center needs a center")
        center, _ = algebraic_sphere(points)
    center = np.asarray(center, dtype=np.float64).copy()
    r = float(np.median(np.linalg.norm(points - center, axis=1))) if radius is None else float(radius)
    center, r, weighted = _irls_sphere(points, center, r, float(scale_mm), bool(fixed_center), int(iterations))
    if not weighted:
        raise ValueError("every boundary point is an outlier of the sphere fit")
    residual = np.linalg.norm(points - center, axis=1) - r
    inliers = np.abs(residual) < scale_mm
    rms = float(np.sqrt(np.mean(residual[inliers] ** 2))) if inliers.any() else float("inf")
    return SphereFit(center=center, radius=float(r), rms=rms, inliers=inliers)


def fit_sphere_with_offset(points, group, *, center, radius, scale_mm: float = 2.0, iterations: int = 20):
    """Robust sphere fit in which the points of one group lie on a concentric sphere of their own.

    Gauss-Newton with Tukey's biweight, as :func:`fit_sphere`, on ``(cx, cy, cz, r, b)``: a point
    of ``group`` is expected at ``r + b`` from the centre, the others at ``r``. Where one part of
    the surface is seen through another blur than the rest (the head's edge next to a socket a
    few millimetres away, against its edge onto soft tissue), a shared sphere would move its centre
    towards the part seen larger; the offset takes that difference instead.

    Parameters
    ----------
    points : (N, 3) array_like
        Boundary points in mm.
    group : (N,) bool array_like
        Points on the offset sphere.
    center, radius :
        Starting sphere.
    scale_mm, iterations :
        As :func:`fit_sphere`.

    Returns
    -------
    sphere : SphereFit
        The sphere of the points outside ``group`` (its ``inliers`` and ``rms`` over all points,
        each against its own sphere; a point that is not finite is no inlier).
    offset_mm : float
        ``b``: how much farther out (negative: nearer in) the group's points lie.

    Raises
    ------
    ValueError
        Fewer than 4 finite points in either set, or too little weight left for the five unknowns.
    """
    points = np.asarray(points, dtype=np.float64)
    group = np.asarray(group, dtype=bool)
    finite = np.isfinite(points).all(axis=1)
    points, group = points[finite], group[finite]
    if group.sum() < 4 or (~group).sum() < 4:
        raise ValueError("too few points on one of the two spheres")
    center = np.asarray(center, dtype=np.float64).copy()
    radius, offset = float(radius), 0.0
    g = group.astype(np.float64)
    for _ in range(iterations):
        delta_xyz = points - center
        distance = np.maximum(np.linalg.norm(delta_xyz, axis=1), 1e-9)
        error = distance - radius - offset * g
        u = error / scale_mm
        weight = np.where(np.abs(u) < 1.0, (1.0 - u * u) ** 2, 0.0)
        if weight[group].sum() < 2.0 or weight[~group].sum() < 2.0 or weight.sum() < 5.0:
            raise ValueError("too few boundary points of one sphere within the fit's scale")
        jacobian = np.column_stack([delta_xyz / distance[:, None], np.ones(len(points)), g])
        normal = jacobian.T @ (weight[:, None] * jacobian)
        step = np.linalg.lstsq(normal, jacobian.T @ (weight * error), rcond=None)[0]
        center += step[:3]
        radius += step[3]
        offset += step[4]
        if np.sqrt((step ** 2).sum()) < 1e-4:
            break
    residual = np.linalg.norm(points - center, axis=1) - radius - offset * g
    inliers = np.abs(residual) < scale_mm
    rms = float(np.sqrt(np.mean(residual[inliers] ** 2))) if inliers.any() else float("inf")
    all_inliers = np.zeros(len(finite), dtype=bool)
    all_inliers[finite] = inliers
    return SphereFit(center=center, radius=float(radius), rms=rms, inliers=all_inliers), float(offset)

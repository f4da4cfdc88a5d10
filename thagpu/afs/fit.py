"""Robust sphere fits: the femoral head and the concentric socket.

Boundary points along radial lines include outliers (the fovea, osteophytes,
the neck, the far cortex of the socket); Tukey's biweight in an iteratively
reweighted Gauss-Newton fit gives them zero weight once they are more than a
few millimetres off the sphere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SphereFit", "fit_sphere", "algebraic_sphere", "tukey_weights"]


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


def tukey_weights(residuals, scale: float) -> np.ndarray:
    """Tukey's biweight: ``(1 - (e / scale)^2)^2`` inside ``scale``, 0 outside."""
    u = np.asarray(residuals) / scale
    return np.where(np.abs(u) < 1.0, (1.0 - u * u) ** 2, 0.0)


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
    for _ in range(iterations):
        offsets = points - center
        dist = np.linalg.norm(offsets, axis=1)
        residual = dist - r
        w = tukey_weights(residual, scale_mm)
        if w.sum() < (1 if fixed_center else 4):
            raise ValueError("every boundary point is an outlier of the sphere fit")
        if fixed_center:
            new_r = float((w * dist).sum() / w.sum())
            step = abs(new_r - r)
            r = new_r
        else:
            # Gauss-Newton on (cx, cy, cz, r): d(residual)/dc = -(p - c)/|p - c|, d/dr = -1.
            unit = offsets / np.maximum(dist, 1e-9)[:, None]
            jac = np.column_stack([-unit, -np.ones(len(points))])
            sw = np.sqrt(w)
            delta, *_ = np.linalg.lstsq(jac * sw[:, None], -residual * sw, rcond=None)
            center += delta[:3]
            r += float(delta[3])
            step = float(np.linalg.norm(delta))
        if step < 1e-4:
            break
    residual = np.linalg.norm(points - center, axis=1) - r
    inliers = np.abs(residual) < scale_mm
    rms = float(np.sqrt(np.mean(residual[inliers] ** 2))) if inliers.any() else float("inf")
    return SphereFit(center=center, radius=float(r), rms=rms, inliers=inliers)

"""Signed distance functions of the primitives that the phantom anatomy is made of.

Every function takes the coordinates ``x, y, z`` (same-shaped arrays, mm) and
returns the signed distance in mm (negative inside). Spheres and capsules are
exact; ellipsoids use the usual first-order bound, which is exact on the
surface and good near it, which is all that cortex depth and partial volume
need. Each primitive also reports an axis-aligned bounding box so the renderer
evaluates it only where it can be non-empty.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Sphere", "AsphericalSphere", "Capsule", "Ellipsoid", "HalfSpace", "Box"]


def _sub(x, y, z, c):
    return x - c[0], y - c[1], z - c[2]


@dataclass(frozen=True)
class Sphere:
    center: tuple
    radius: float

    def sdf(self, x, y, z):
        dx, dy, dz = _sub(x, y, z, self.center)
        return np.sqrt(dx * dx + dy * dy + dz * dz) - self.radius

    def bounds(self):
        c = np.asarray(self.center)
        return c - self.radius, c + self.radius


@dataclass(frozen=True)
class AsphericalSphere:
    """A sphere whose radius varies with direction by Legendre terms.

    ``r(u) = radius + a2 * P2(u . e2) + a3 * P3(u . e3)``; the mean radius over
    the sphere is ``radius`` (P2 and P3 integrate to zero), so ``radius`` is the
    radius a least-squares sphere fit recovers, and ``|a2| + |a3|`` bounds the
    departure from the sphere. ``offset`` grows the surface outwards (the
    socket is the head surface grown by the joint space).
    """

    center: tuple
    radius: float
    a2: float = 0.0
    e2: tuple = (0.0, 0.0, 1.0)
    a3: float = 0.0
    e3: tuple = (1.0, 0.0, 0.0)
    offset: float = 0.0

    def radius_along(self, dx, dy, dz, norm):
        safe = np.maximum(norm, 1e-9)
        t2 = (dx * self.e2[0] + dy * self.e2[1] + dz * self.e2[2]) / safe
        t3 = (dx * self.e3[0] + dy * self.e3[1] + dz * self.e3[2]) / safe
        p2 = 0.5 * (3.0 * t2 * t2 - 1.0)
        p3 = 0.5 * (5.0 * t3 ** 3 - 3.0 * t3)
        return self.radius + self.offset + self.a2 * p2 + self.a3 * p3

    def sdf(self, x, y, z):
        dx, dy, dz = _sub(x, y, z, self.center)
        norm = np.sqrt(dx * dx + dy * dy + dz * dz)
        return norm - self.radius_along(dx, dy, dz, norm)

    def bounds(self):
        c = np.asarray(self.center)
        reach = self.radius + self.offset + abs(self.a2) + abs(self.a3)
        return c - reach, c + reach


@dataclass(frozen=True)
class Capsule:
    """All points within ``radius`` of the segment ``a``-``b``; ``radius_b`` tapers it."""

    a: tuple
    b: tuple
    radius: float
    radius_b: float | None = None

    def sdf(self, x, y, z):
        a = np.asarray(self.a, dtype=float)
        ab = np.asarray(self.b, dtype=float) - a
        dx, dy, dz = _sub(x, y, z, a)
        t = np.clip((dx * ab[0] + dy * ab[1] + dz * ab[2]) / float(ab @ ab), 0.0, 1.0)
        ex, ey, ez = dx - t * ab[0], dy - t * ab[1], dz - t * ab[2]
        rb = self.radius if self.radius_b is None else self.radius_b
        return np.sqrt(ex * ex + ey * ey + ez * ez) - (self.radius + (rb - self.radius) * t)

    def bounds(self):
        r = max(self.radius, self.radius if self.radius_b is None else self.radius_b)
        a, b = np.asarray(self.a, float), np.asarray(self.b, float)
        return np.minimum(a, b) - r, np.maximum(a, b) + r


@dataclass(frozen=True)
class Ellipsoid:
    """Ellipsoid with semi-axes ``radii`` along the orthonormal rows of ``axes``."""

    center: tuple
    radii: tuple
    axes: tuple = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))

    def sdf(self, x, y, z):
        dx, dy, dz = _sub(x, y, z, self.center)
        k0 = 0.0
        k1 = 0.0
        for axis, r in zip(self.axes, self.radii):
            u = dx * axis[0] + dy * axis[1] + dz * axis[2]
            k0 = k0 + (u / r) ** 2
            k1 = k1 + (u / (r * r)) ** 2
        k0 = np.sqrt(k0)
        k1 = np.sqrt(k1)
        return k0 * (k0 - 1.0) / np.maximum(k1, 1e-12)

    def bounds(self):
        c = np.asarray(self.center)
        axes = np.asarray(self.axes)
        half = np.sqrt(((axes * np.asarray(self.radii)[:, None]) ** 2).sum(axis=0))
        return c - half, c + half


@dataclass(frozen=True)
class HalfSpace:
    """Points with ``(p - point) . normal <= 0`` are inside (``normal`` is a unit vector)."""

    point: tuple
    normal: tuple

    def sdf(self, x, y, z):
        dx, dy, dz = _sub(x, y, z, self.point)
        return dx * self.normal[0] + dy * self.normal[1] + dz * self.normal[2]


@dataclass(frozen=True)
class Box:
    """Axis-aligned box given by its low and high corners (exact outside, bound inside)."""

    low: tuple
    high: tuple

    def sdf(self, x, y, z):
        c = (np.asarray(self.low) + np.asarray(self.high)) / 2
        h = (np.asarray(self.high) - np.asarray(self.low)) / 2
        qx, qy, qz = np.abs(x - c[0]) - h[0], np.abs(y - c[1]) - h[1], np.abs(z - c[2]) - h[2]
        outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2 + np.maximum(qz, 0) ** 2)
        inside = np.minimum(np.maximum(qx, np.maximum(qy, qz)), 0)
        return outside + inside

    def bounds(self):
        return np.asarray(self.low, float), np.asarray(self.high, float)


@dataclass(frozen=True)
class Intersect:
    """Points inside both ``a`` and ``b`` (bounds of ``a``)."""

    a: object
    b: object

    def sdf(self, x, y, z):
        return np.maximum(self.a.sdf(x, y, z), self.b.sdf(x, y, z))

    def bounds(self):
        return self.a.bounds()


@dataclass(frozen=True)
class Subtract:
    """Points inside ``a`` and outside ``b`` (bounds of ``a``)."""

    a: object
    b: object

    def sdf(self, x, y, z):
        return np.maximum(self.a.sdf(x, y, z), -self.b.sdf(x, y, z))

    def bounds(self):
        return self.a.bounds()


def union_sdf(shapes, x, y, z):
    """Signed distance of the union of ``shapes`` (the minimum of theirs)."""
    out = None
    for shape in shapes:
        d = shape.sdf(x, y, z)
        out = d if out is None else np.minimum(out, d)
    return out


def union_bounds(shapes):
    lows, highs = zip(*(s.bounds() for s in shapes))
    return np.min(lows, axis=0), np.max(highs, axis=0)


__all__ += ["Intersect", "Subtract", "union_sdf", "union_bounds"]

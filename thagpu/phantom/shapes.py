"""Signed distance functions of the primitives that the phantom anatomy is made of.

Every function takes the coordinates ``x, y, z`` (same-shaped arrays, mm) and
returns the signed distance in mm (negative inside). Spheres and capsules are
exact; ellipsoids use the usual first-order bound, which is exact on the
surface and good near it, which is all that cortex depth and partial volume
need. Each primitive also reports an axis-aligned bounding box so the renderer
evaluates it only where it can be non-empty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Sphere", "AsphericalSphere", "Capsule", "Ellipsoid", "HalfSpace", "Box"]


def _segment_bounds(a, b, reach):
    """Axis-aligned box around the segment ``a``-``b`` grown by ``reach`` (mm)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.minimum(a, b) - reach, np.maximum(a, b) + reach


def _sub(x, y, z, c):
    return x - float(c[0]), y - float(c[1]), z - float(c[2])


def _plain(value):
    """Python floats for NumPy scalars and vectors, so float32 coordinates stay float32 (NEP 50)."""
    if isinstance(value, (np.floating, np.integer)):
        return float(value)
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float, np.number, list, tuple, np.ndarray)) for v in value):
        return tuple(_plain(v) for v in value)
    return value


class _Shape:
    """Base of the shapes: number fields become plain Python floats."""

    def __post_init__(self):
        for name in self.__dataclass_fields__:
            object.__setattr__(self, name, _plain(getattr(self, name)))


@dataclass(frozen=True)
class Sphere(_Shape):
    center: tuple
    radius: float

    def sdf(self, x, y, z):
        dx, dy, dz = _sub(x, y, z, self.center)
        return np.sqrt(dx * dx + dy * dy + dz * dz) - self.radius

    def bounds(self):
        c = np.asarray(self.center)
        return c - self.radius, c + self.radius


@dataclass(frozen=True)
class AsphericalSphere(_Shape):
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
class Capsule(_Shape):
    """All points within ``radius`` of the segment ``a``-``b``; ``radius_b`` tapers it."""

    a: tuple
    b: tuple
    radius: float
    radius_b: float | None = None

    def sdf(self, x, y, z):
        a = np.asarray(self.a, dtype=float)
        ab = np.asarray(self.b, dtype=float) - a
        inv = 1.0 / float(ab @ ab)
        ab = ab.tolist()
        dx, dy, dz = _sub(x, y, z, a)
        t = np.clip((dx * ab[0] + dy * ab[1] + dz * ab[2]) * inv, 0.0, 1.0)
        ex, ey, ez = dx - t * ab[0], dy - t * ab[1], dz - t * ab[2]
        rb = self.radius if self.radius_b is None else self.radius_b
        return np.sqrt(ex * ex + ey * ey + ez * ez) - (self.radius + (rb - self.radius) * t)

    def bounds(self):
        r = max(self.radius, self.radius if self.radius_b is None else self.radius_b)
        return _segment_bounds(self.a, self.b, r)


@dataclass(frozen=True)
class Ellipsoid(_Shape):
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
class HalfSpace(_Shape):
    """Points with ``(p - point) . normal <= 0`` are inside (``normal`` is a unit vector)."""

    point: tuple
    normal: tuple

    def sdf(self, x, y, z):
        dx, dy, dz = _sub(x, y, z, self.point)
        return dx * self.normal[0] + dy * self.normal[1] + dz * self.normal[2]


@dataclass(frozen=True)
class Box(_Shape):
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
class Intersect(_Shape):
    """Points inside both ``a`` and ``b`` (bounds of ``a``)."""

    a: object
    b: object

    def sdf(self, x, y, z):
        return np.maximum(self.a.sdf(x, y, z), self.b.sdf(x, y, z))

    def bounds(self):
        return self.a.bounds()


@dataclass(frozen=True)
class Subtract(_Shape):
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


# ---------------------------------------------------------------------------
# Primitives of the anatomic model (thagpu.phantom.pelvis / femur).
# ---------------------------------------------------------------------------

def _unit(v):
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def _frame(axis, up):
    """Orthonormal (e1, e2, axis): e1 is the direction of ``up`` made perpendicular to ``axis``."""
    axis = _unit(axis)
    up = np.asarray(up, dtype=float) - np.dot(up, axis) * axis
    if np.linalg.norm(up) < 1e-6:
        up = np.cross(axis, [1.0, 0.0, 0.0] if abs(axis[0]) < 0.9 else [0.0, 1.0, 0.0])
    e1 = _unit(up)
    return e1, np.cross(axis, e1), axis


def smooth_min(a, b, k):
    """Polynomial smooth minimum of two distances (Quilez): blends within ``k`` mm."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def _in_box(box, x, y, z, pad):
    lo, hi = box
    return ((x >= lo[0] - pad) & (x <= hi[0] + pad) & (y >= lo[1] - pad) & (y <= hi[1] + pad)
            & (z >= lo[2] - pad) & (z <= hi[2] + pad))


def _member_boxes(shapes):
    return tuple(tuple(np.asarray(b, float) for b in shape.bounds()) for shape in shapes)


def _blend(shapes, boxes, x, y, z, combine, pad):
    """Combine member distances, each member evaluated only inside its own box (grown by ``pad``)."""
    out = np.full(np.shape(x), 1e3, dtype=np.result_type(x, np.float32))
    for shape, box in zip(shapes, boxes):
        inside = _in_box(box, x, y, z, pad)
        if not inside.any():
            continue
        if inside.all():
            out = combine(out, shape.sdf(x, y, z))
            continue
        out[inside] = combine(out[inside], shape.sdf(x[inside], y[inside], z[inside]))
    return out


@dataclass(frozen=True)
class SmoothUnion(_Shape):
    """Union of ``shapes`` whose seams are filled with fillets of about ``k_mm`` (smooth minimum).

    Each member is evaluated only inside its own bounding box grown by
    ``k_mm`` (outside it is far enough not to change the result).
    """

    shapes: tuple
    k_mm: float = 4.0

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "_boxes", _member_boxes(self.shapes))

    def sdf(self, x, y, z):
        return _blend(self.shapes, self._boxes, x, y, z, lambda a, b: smooth_min(a, b, self.k_mm), self.k_mm)

    def bounds(self):
        lo = np.min([b[0] for b in self._boxes], axis=0)
        hi = np.max([b[1] for b in self._boxes], axis=0)
        return lo - 0.0, hi + 0.0


@dataclass(frozen=True)
class EllipticCylinder(_Shape):
    """Flat-ended cylinder from ``a`` to ``b`` with an elliptic section that may taper.

    The section has semi-axes ``radii_a`` (at ``a``) and ``radii_b`` (at ``b``)
    along ``e1`` (the direction of ``up`` made perpendicular to the axis) and
    ``e2``. The distance is the usual first-order ellipse bound combined with
    the end planes: exact on the surface, a close bound near it.
    """

    a: tuple
    b: tuple
    radii_a: tuple
    radii_b: tuple | None = None
    up: tuple = (0.0, 0.0, 1.0)

    def sdf(self, x, y, z):
        a = np.asarray(self.a, float)
        ab = np.asarray(self.b, float) - a
        length = float(np.linalg.norm(ab))
        e1, e2, ax = (v.tolist() for v in _frame(ab, self.up))
        dx, dy, dz = _sub(x, y, z, a)
        s = dx * ax[0] + dy * ax[1] + dz * ax[2]
        u = dx * e1[0] + dy * e1[1] + dz * e1[2]
        v = dx * e2[0] + dy * e2[1] + dz * e2[2]
        rb = self.radii_a if self.radii_b is None else self.radii_b
        t = np.clip(s / length, 0.0, 1.0)
        r1 = self.radii_a[0] + (rb[0] - self.radii_a[0]) * t
        r2 = self.radii_a[1] + (rb[1] - self.radii_a[1]) * t
        k0 = np.sqrt((u / r1) ** 2 + (v / r2) ** 2)
        k1 = np.sqrt((u / (r1 * r1)) ** 2 + (v / (r2 * r2)) ** 2)
        lateral = k0 * (k0 - 1.0) / np.maximum(k1, 1e-12)
        along = np.maximum(-s, s - length)
        outside = np.sqrt(np.maximum(lateral, 0.0) ** 2 + np.maximum(along, 0.0) ** 2)
        return outside + np.minimum(np.maximum(lateral, along), 0.0)

    def bounds(self):
        rb = self.radii_a if self.radii_b is None else self.radii_b
        r = max(max(self.radii_a), max(rb))
        return _segment_bounds(self.a, self.b, r)


@dataclass(frozen=True)
class Torus(_Shape):
    """Ring of tube radius ``minor`` around the circle of radius ``major`` about ``axis`` at ``center``."""

    center: tuple
    axis: tuple
    major: float
    minor: float

    def sdf(self, x, y, z):
        ax = _unit(self.axis).tolist()
        dx, dy, dz = _sub(x, y, z, self.center)
        h = dx * ax[0] + dy * ax[1] + dz * ax[2]
        rho = np.sqrt(np.maximum(dx * dx + dy * dy + dz * dz - h * h, 0.0))
        return np.sqrt((rho - self.major) ** 2 + h * h) - self.minor

    def bounds(self):
        c = np.asarray(self.center, float)
        r = self.major + self.minor
        return c - r, c + r


@dataclass(frozen=True)
class Cone(_Shape):
    """Infinite solid cone with apex ``apex``, unit ``axis`` and half opening angle ``half_angle_deg``."""

    apex: tuple
    axis: tuple
    half_angle_deg: float
    reach: float = 200.0  # only for the bounding box

    def sdf(self, x, y, z):
        ax = _unit(self.axis).tolist()
        dx, dy, dz = _sub(x, y, z, self.apex)
        norm = np.sqrt(dx * dx + dy * dy + dz * dz)
        cos_t = np.clip((dx * ax[0] + dy * ax[1] + dz * ax[2]) / np.maximum(norm, 1e-9), -1.0, 1.0)
        excess = np.arccos(cos_t) - math.radians(self.half_angle_deg)
        return np.where(excess < np.pi / 2, norm * np.sin(np.minimum(excess, np.pi / 2)), norm)

    def bounds(self):
        c = np.asarray(self.apex, float)
        return c - self.reach, c + self.reach


@dataclass(frozen=True)
class ThickShell(_Shape):
    """A curved plate: the points within ``thickness / 2`` of the zero set of ``surface``, inside ``outline``.

    The thickness grows from ``thickness_mm`` in the middle of the plate to
    ``edge_mm`` at its outline, over ``edge_width_mm`` (a thin centre, thick
    rims: the iliac wing).
    """

    surface: object
    outline: object
    thickness_mm: float
    edge_mm: float
    edge_width_mm: float

    def sdf(self, x, y, z):
        inside = -self.outline.sdf(x, y, z)
        t = self.thickness_mm + (self.edge_mm - self.thickness_mm) * np.exp(-np.maximum(inside, 0.0) / self.edge_width_mm)
        return np.maximum(np.abs(self.surface.sdf(x, y, z)) - t / 2.0, -inside)

    def bounds(self):
        lo, hi = self.outline.bounds()
        slo, shi = self.surface.bounds()
        return np.maximum(lo, slo - self.edge_mm), np.minimum(hi, shi + self.edge_mm)


@dataclass(frozen=True)
class HeadShape(_Shape):
    """A femoral head: a Legendre-deformed sphere, flattened over the load zone.

    ``r(u) = radius + a2 P2(u.e2) + a3 P3(u.e3) - flat_mm * w(u.flat_dir)`` with
    ``w`` rising smoothly from 0 at ``flat_width_deg`` off ``flat_dir`` to 1 on it
    (the superior flattening of an osteoarthritic head). ``offset`` grows it.
    """

    center: tuple
    radius: float
    a2: float = 0.0
    e2: tuple = (0.0, 0.0, 1.0)
    a3: float = 0.0
    e3: tuple = (1.0, 0.0, 0.0)
    flat_mm: float = 0.0
    flat_dir: tuple = (0.0, 0.0, 1.0)
    flat_width_deg: float = 35.0
    offset: float = 0.0

    def radius_along_unit(self, ux, uy, uz):
        t2 = ux * self.e2[0] + uy * self.e2[1] + uz * self.e2[2]
        t3 = ux * self.e3[0] + uy * self.e3[1] + uz * self.e3[2]
        r = self.radius + self.offset + self.a2 * 0.5 * (3 * t2 * t2 - 1) + self.a3 * 0.5 * (5 * t3 ** 3 - 3 * t3)
        if self.flat_mm:
            tf = ux * self.flat_dir[0] + uy * self.flat_dir[1] + uz * self.flat_dir[2]
            c0 = math.cos(math.radians(self.flat_width_deg))
            w = np.clip((tf - c0) / (1.0 - c0), 0.0, 1.0)
            r = r - self.flat_mm * w * w * (3 - 2 * w)
        return r

    def sdf(self, x, y, z):
        dx, dy, dz = _sub(x, y, z, self.center)
        norm = np.maximum(np.sqrt(dx * dx + dy * dy + dz * dz), 1e-9)
        return norm - self.radius_along_unit(dx / norm, dy / norm, dz / norm)

    def bounds(self):
        c = np.asarray(self.center)
        reach = self.radius + self.offset + abs(self.a2) + abs(self.a3)
        return c - reach, c + reach


@dataclass(frozen=True)
class JointSurface(_Shape):
    """The acetabular bone surface: the head surface grown by a joint space that varies with direction.

    ``gap(u) = space_mm - (space_mm - min_mm) * w(u.narrow_dir)`` with ``w``
    a smooth bump of half width ``narrow_width_deg`` (osteoarthritic narrowing
    over the superolateral load zone; ``min_mm = space_mm`` for a healthy hip).
    """

    head: HeadShape
    space_mm: float
    min_mm: float
    narrow_dir: tuple
    narrow_width_deg: float = 40.0
    extra: float = 0.0  # grows the whole surface (cavity reach)

    def gap(self, ux, uy, uz):
        t = ux * self.narrow_dir[0] + uy * self.narrow_dir[1] + uz * self.narrow_dir[2]
        c0 = math.cos(math.radians(self.narrow_width_deg))
        w = np.clip((t - c0) / (1.0 - c0), 0.0, 1.0)
        return self.space_mm - (self.space_mm - self.min_mm) * w * w * (3 - 2 * w)

    def sdf(self, x, y, z):
        dx, dy, dz = _sub(x, y, z, self.head.center)
        norm = np.maximum(np.sqrt(dx * dx + dy * dy + dz * dz), 1e-9)
        ux, uy, uz = dx / norm, dy / norm, dz / norm
        return norm - self.head.radius_along_unit(ux, uy, uz) - self.gap(ux, uy, uz) - self.extra

    def bounds(self):
        lo, hi = self.head.bounds()
        return lo - self.space_mm - self.extra, hi + self.space_mm + self.extra


@dataclass(frozen=True)
class Union(_Shape):
    """Hard union of ``shapes`` (each evaluated only in its own box)."""

    shapes: tuple

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "_boxes", _member_boxes(self.shapes))

    def sdf(self, x, y, z):
        return _blend(self.shapes, self._boxes, x, y, z, np.minimum, 0.0)

    def bounds(self):
        return np.min([b[0] for b in self._boxes], axis=0), np.max([b[1] for b in self._boxes], axis=0)


def sphere_directions(n: int) -> np.ndarray:
    """``n`` nearly uniform unit vectors (a Fibonacci lattice on the sphere), shape (n, 3)."""
    i = np.arange(n) + 0.5
    z = 1.0 - 2.0 * i / n
    phi = np.pi * (3.0 - np.sqrt(5.0)) * i
    rho = np.sqrt(1.0 - z * z)
    return np.stack([rho * np.cos(phi), rho * np.sin(phi), z], axis=1)


__all__ += ["sphere_directions", "smooth_min", "SmoothUnion", "EllipticCylinder", "Torus", "Cone", "ThickShell", "HeadShape",
            "JointSurface", "Union"]

"""The proximal femur of the anatomic phantom, built in its own (neutral standing) frame.

Head, fovea capitis, neck of elliptic section, greater and lesser trochanters,
the intertrochanteric region and the shaft with its medullary canal, joined by
smooth unions; a cortex whose thickness follows the region (thin subchondral
plate on the head, thick diaphysis); cancellous bone with trabecular texture;
and the osteoarthritic changes (osteophyte ring at the head-neck junction,
subchondral sclerosis and cysts, flattening). The femur is then rotated about
the head centre (flexion, abduction, rotation) by the renderer. Numbers and
their sources: docs/phantom.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .anatomy import PARTS, BoneObject
from .texture import TEXTURE_AMPLITUDE
from .shapes import (Capsule, Ellipsoid, EllipticCylinder, HeadShape, SmoothUnion, Sphere, Subtract,
                     Torus, sphere_directions)

__all__ = ["FemurSpec", "femur_geometry", "build_femur", "head_surface_points"]


def _unit(v):
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


@dataclass
class FemurSpec:
    """Drawn parameters of one proximal femur (femur frame = anatomical frame before its pose)."""

    side: str
    sign: float
    center: np.ndarray
    head: HeadShape
    neck_dir: np.ndarray  # unit, from the neck base towards the head
    shaft_dir: np.ndarray  # unit, down the shaft
    junction: np.ndarray  # neck base on the shaft axis
    neck_shaft_deg: float
    anteversion_deg: float
    shaft_radius: float
    fovea_dir: np.ndarray
    fovea_radius: float
    fovea_depth: float
    cortex_head_mm: float
    cortex_neck_mm: float
    cortex_shaft_mm: float
    cartilage_mm: float
    osteophyte_mm: float
    cysts: list  # (centre, radius) in the femur frame
    sclerosis_hu: float
    sclerosis_depth_mm: float
    load_dir: np.ndarray  # unit: the head's load zone (superior)


def femur_geometry(rng, side, sign, center, radius, *, aspherical=True, oa_grade=0, osteoporotic=False):
    """Draw a femur's shape parameters.

    Parameters
    ----------
    rng : numpy.random.Generator
    side : {"left", "right"}
    sign : float
        +1 on the patient's right (RAS x), -1 on the left.
    center : (3,) array
        Head centre (mm, anatomical frame).
    radius : float
        Nominal head radius (mm).
    aspherical : bool
        Legendre deformation of the head up to about 1 mm.
    oa_grade : int
        0 healthy .. 3 severe osteoarthritis (flattening, osteophytes, cysts, sclerosis).
    osteoporotic : bool
        Thin cortices.
    """
    center = np.asarray(center, float)
    a2 = rng.uniform(-0.6, 0.6) if aspherical else 0.0
    a3 = rng.uniform(-0.35, 0.35) if aspherical else 0.0
    load_dir = _unit([sign * 0.3, 0.1, 1.0])
    flat = [0.0, rng.uniform(0.0, 0.6), rng.uniform(0.5, 1.5), rng.uniform(1.5, 3.0)][oa_grade]
    head = HeadShape(tuple(center), float(radius), a2, tuple(_unit(rng.normal(size=3))), a3,
                     tuple(_unit(rng.normal(size=3))), flat, tuple(load_dir), 35.0)
    neck_shaft = rng.uniform(120.0, 140.0)
    anteversion = rng.uniform(5.0, 25.0)
    # Anatomical shaft axis about 6-7 deg off vertical (down and slightly medial).
    shaft_dir = _unit([-sign * np.sin(np.radians(6.5)), 0.0, -np.cos(np.radians(6.5))])
    medial = _unit(np.cross(shaft_dir, [0.0, 1.0, 0.0]) * sign)
    if medial[0] * sign > 0:
        medial = -medial
    alpha, beta = np.radians(neck_shaft), np.radians(anteversion)
    neck_dir = _unit(np.cos(alpha) * shaft_dir + np.sin(alpha) * (np.cos(beta) * medial + np.sin(beta) * np.array([0, 1.0, 0])))
    junction = center - rng.uniform(1.9, 2.2) * radius * neck_dir
    # Fovea: on the medial pole of the head, a little posterior and inferior to it.
    fovea_dir = _unit(neck_dir + np.array([0.0, -0.25, -0.35]))
    fovea_width = rng.uniform(10.0, 15.0)
    fovea_depth = rng.uniform(2.0, 4.0)
    fovea_radius = (fovea_width ** 2 / 4 + fovea_depth ** 2) / (2 * fovea_depth)
    if osteoporotic:
        cortex = (rng.uniform(0.5, 0.9), rng.uniform(0.8, 1.2), rng.uniform(2.0, 3.0))
    else:
        cortex = (rng.uniform(0.7, 1.4), rng.uniform(1.5, 2.5), rng.uniform(4.0, 7.0))
    cysts = []
    if oa_grade >= 2:
        for _ in range(int(rng.integers(0, 2 + oa_grade))):
            u = _unit(load_dir + 0.35 * rng.normal(size=3))
            r = rng.uniform(1.5, 5.0)
            depth = rng.uniform(r + 1.5, r + 5.0)
            cysts.append((center + (radius - depth) * u, r))
    return FemurSpec(
        side=side, sign=sign, center=center, head=head, neck_dir=neck_dir, shaft_dir=shaft_dir,
        junction=junction, neck_shaft_deg=neck_shaft, anteversion_deg=anteversion,
        shaft_radius=rng.uniform(12.5, 15.0), fovea_dir=fovea_dir, fovea_radius=fovea_radius,
        fovea_depth=fovea_depth, cortex_head_mm=cortex[0], cortex_neck_mm=cortex[1], cortex_shaft_mm=cortex[2],
        cartilage_mm=[rng.uniform(1.5, 2.5), rng.uniform(1.2, 2.0), rng.uniform(0.8, 1.5), rng.uniform(0.3, 1.0)][oa_grade],
        osteophyte_mm=[0.0, rng.uniform(0.0, 1.5), rng.uniform(1.5, 3.0), rng.uniform(3.0, 5.0)][oa_grade],
        cysts=cysts, sclerosis_hu=[0.0, rng.uniform(0, 150), rng.uniform(200, 400), rng.uniform(350, 600)][oa_grade],
        sclerosis_depth_mm=rng.uniform(2.0, 5.0), load_dir=load_dir)


def fovea_shape(spec: FemurSpec) -> Sphere:
    """The sphere whose cap, cut out of the head, is the fovea capitis."""
    r = spec.head.radius
    return Sphere(tuple(spec.center + (r + spec.fovea_radius - spec.fovea_depth) * spec.fovea_dir), spec.fovea_radius)


def head_surface_points(spec: FemurSpec, n=2000):
    """Points of the true head surface: the head shape's whole surface but the fovea (femur frame).

    The least-squares sphere of these points is the true head centre and radius.
    """
    u = sphere_directions(n)
    u = u[u @ spec.fovea_dir < np.cos(np.arcsin(min(0.99, (spec.fovea_radius * 1.2) / spec.head.radius)))]
    r = spec.head.radius_along_unit(u[:, 0], u[:, 1], u[:, 2])
    return spec.center + u * r[:, None]


def _shapes(spec: FemurSpec, with_head: bool):
    c, r, n, d, j, s = spec.center, spec.head.radius, spec.neck_dir, spec.shaft_dir, spec.junction, spec.sign
    lateral = np.array([s, 0.0, 0.0])
    posterior = np.array([0.0, -1.0, 0.0])
    medial = -lateral
    sr = spec.shaft_radius
    # Neck: elliptic section, taller (SI) than deep (AP); narrowest near the head (head-neck offset).
    neck_up = np.cross(n, [0.0, 1.0, 0.0]) * s
    neck = EllipticCylinder(tuple(c - 0.35 * r * n), tuple(j - 0.1 * r * n), (0.78 * r, 0.66 * r),
                            (1.0 * r, 0.78 * r), up=tuple(neck_up if np.linalg.norm(neck_up) > 0 else (0, 0, 1)))
    greater = Ellipsoid(tuple(j + 10.0 * lateral + 8.0 * posterior - 0.55 * r * d), (11.0, 15.0, 20.0))
    lesser = Ellipsoid(tuple(j + 1.6 * r * d + 0.55 * sr * medial + 0.55 * sr * posterior), (7.0, 7.0, 10.0))
    inter = EllipticCylinder(tuple(j - 0.4 * r * d), tuple(j + 2.6 * r * d), (0.95 * r, 0.85 * r), (sr, 0.95 * sr),
                             up=tuple(lateral))
    shaft = EllipticCylinder(tuple(j + 2.0 * r * d), tuple(j + 420.0 * d), (sr, 0.95 * sr), (0.9 * sr, 0.88 * sr),
                             up=tuple(lateral))
    body = [greater, lesser, inter, shaft]
    if not with_head:  # neck osteotomy of a hip replacement: keep the neck's base only
        return [SmoothUnion(tuple([EllipticCylinder(tuple(j + 0.5 * r * n), tuple(j - 0.1 * r * n), (0.95 * r, 0.75 * r),
                                                    (1.0 * r, 0.78 * r), up=(0, 0, 1))] + body), 6.0)]
    upper = [SmoothUnion((spec.head, neck), 3.0)]
    if spec.osteophyte_mm > 0:
        # A ring of new bone around the head-neck junction.
        ring_at = c - 0.72 * r * n
        upper.append(Torus(tuple(ring_at), tuple(n), 0.78 * r, spec.osteophyte_mm))
    return [Subtract(SmoothUnion(tuple(upper), 2.0), fovea_shape(spec)), SmoothUnion(tuple([neck] + body), 7.0)]


def build_femur(spec: FemurSpec, pose, *, texture, hu, bvtv, implant=False) -> BoneObject:
    """The femur as a :class:`BoneObject` with its cortex and density fields.

    Parameters
    ----------
    spec : FemurSpec
    pose : (rotation, pivot)
        Rotation about the head centre from the femur frame to the anatomical frame.
    texture : callable
        Trabecular field (unit SD) at femur-frame points.
    hu : dict
        ``marrow``, ``tissue`` (bone tissue), ``cortical`` HU of this case.
    bvtv : float
        Mean bone volume fraction of the cancellous bone.
    implant : bool
        The head and neck were resected (hip replacement).
    """
    c, r, n, d, j = spec.center, spec.head.radius, spec.neck_dir, spec.shaft_dir, spec.junction
    shapes = _shapes(spec, not implant)

    def cortex_fn(x, y, z):
        along_neck = (x - c[0]) * -n[0] + (y - c[1]) * -n[1] + (z - c[2]) * -n[2]
        down = (x - j[0]) * d[0] + (y - j[1]) * d[1] + (z - j[2]) * d[2]
        head_part = np.interp(along_neck, [0.5 * r, 0.9 * r], [spec.cortex_head_mm, spec.cortex_neck_mm])
        shaft_part = np.interp(down, [2.0 * r, 3.0 * r, 4.5 * r], [spec.cortex_neck_mm, 0.5 * (spec.cortex_neck_mm + spec.cortex_shaft_mm), spec.cortex_shaft_mm])
        return head_part + shaft_part - spec.cortex_neck_mm

    def cancellous_fn(x, y, z):
        dx, dy, dz = x - c[0], y - c[1], z - c[2]
        dist = np.sqrt(dx * dx + dy * dy + dz * dz)
        along_neck = -(dx * n[0] + dy * n[1] + dz * n[2])
        # Denser principal compressive trabeculae in the head, sparser towards Ward's triangle.
        v = bvtv * np.interp(along_neck, [0.3 * r, 1.2 * r], [1.35, 0.85])
        v = v + TEXTURE_AMPLITUDE * bvtv * texture(x, y, z)
        hu_ = hu["marrow"] + np.clip(v, 0.0, 0.95) * (hu["tissue"] - hu["marrow"])
        if spec.sclerosis_hu > 0:
            depth = r - dist
            cos_load = (dx * spec.load_dir[0] + dy * spec.load_dir[1] + dz * spec.load_dir[2]) / np.maximum(dist, 1e-6)
            band = np.clip((cos_load - 0.75) / 0.2, 0, 1) * np.clip(1.0 - (depth - spec.cortex_head_mm) / spec.sclerosis_depth_mm, 0, 1)
            hu_ = hu_ + spec.sclerosis_hu * band
        return hu_.astype(np.float32)

    def cortical_fn(x, y, z):
        return np.full(np.shape(x), hu["cortical"], dtype=np.float32) + 40.0 * texture(x * 0.5, y * 0.5, z * 0.5)

    inclusions = [] if implant else [("fluid", Sphere(tuple(p), float(rad))) for p, rad in spec.cysts]
    marrow = Capsule(tuple(j + 3.2 * r * d), tuple(j + 430.0 * d), spec.shaft_radius)
    return BoneObject(name=f"femur_{spec.side}", part=PARTS[f"femur_{spec.side}"], shapes=list(shapes),
                      cortex_mm=spec.cortex_neck_mm, marrow=marrow, pose=pose, cortex_fn=cortex_fn,
                      cancellous_fn=cancellous_fn, cortical_fn=cortical_fn, inclusions=inclusions)


def femoral_joint_tissue(spec: FemurSpec, pose):
    """Head cartilage (everywhere but the fovea), posed with the femur."""
    shell = HeadShape(**{**spec.head.__dict__, "offset": spec.cartilage_mm})
    return [("cartilage", Subtract(shell, fovea_shape(spec)), pose)]

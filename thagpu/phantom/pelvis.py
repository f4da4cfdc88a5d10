"""The bony pelvis of the anatomic phantom: hip bones, sacrum, L5 and their joints.

Each hip bone (innominate) is a smooth union of a solid acetabular mass (the
meeting of ilium, ischium and pubis), the iliac wing (a curved plate, thin in
the iliac fossa and thick at the crest and the columns), the ischium with its
tuberosity and spine, the pubic rami and body around the obturator foramen.
The acetabulum is a cavity in that mass: a lunate articular surface around the
head at the joint-space distance (narrowing over the load zone in
osteoarthritis), a deeper acetabular fossa behind a thin medial wall, open
inferiorly as the acetabular notch. Soft tissues of the joint (cartilage,
pulvinar fat, labrum, transverse ligament, ligamentum teres) are listed for
the renderer to paint before the bones. Sources of the numbers: docs/phantom.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .anatomy import PARTS, BoneObject, cup_axis
from .texture import TEXTURE_AMPLITUDE
from .shapes import (Capsule, Cone, Ellipsoid, EllipticCylinder, HalfSpace, HeadShape, Intersect,
                     JointSurface, SmoothUnion, Sphere, Subtract, ThickShell, Torus, Union, _Shape)

__all__ = ["AcetabulumSpec", "acetabulum_geometry", "build_hip_bone", "acetabular_joint_tissue",
           "build_sacrum_l5", "rim_offset_for_ce"]


def _unit(v):
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def rim_offset_for_ce(ce_deg, inclination_deg, anteversion_deg):
    """Offset ``k`` of the rim plane (``u . axis = k`` on the unit sphere) that gives a lateral CE angle.

    In the coronal plane through the head centre the lateral rim point at
    angle ``CE`` from the vertical satisfies ``u . axis = -cos(ant) cos(CE + inc)``.
    """
    return float(-np.cos(np.radians(anteversion_deg)) * np.cos(np.radians(ce_deg + inclination_deg)))


@dataclass(frozen=True)
class RimCut(_Shape):
    """The acetabular rim as a warped plane: ``(p - c) . axis <= level(u)`` is the covered side.

    ``level(u) = radius * (k + d_post * max(w, 0) + d_ant * max(-w, 0)) + lift`` with ``w = u . posterior``
    (``u`` the direction from the centre, ``posterior`` a unit vector normal to the axis): the
    posterior wall reaches further over the head than the roof's lateral edge, the anterior wall
    less far from it. Not a true distance off the rim, but 1-Lipschitz along the axis, which is all
    the cuts need. ``outward`` flips the sides.
    """

    center: tuple
    axis: tuple
    posterior: tuple
    radius: float
    k: float
    d_post: float
    d_ant: float
    lift: float = 0.0
    outward: bool = False

    def level(self, ux, uy, uz):
        w = ux * self.posterior[0] + uy * self.posterior[1] + uz * self.posterior[2]
        return self.radius * (self.k + self.d_post * np.maximum(w, 0.0) + self.d_ant * np.maximum(-w, 0.0)) + self.lift

    def sdf(self, x, y, z):
        dx, dy, dz = x - self.center[0], y - self.center[1], z - self.center[2]
        norm = np.maximum(np.sqrt(dx * dx + dy * dy + dz * dz), 1e-6)
        h = dx * self.axis[0] + dy * self.axis[1] + dz * self.axis[2]
        d = h - self.level(dx / norm, dy / norm, dz / norm)
        return -d if self.outward else d


@dataclass
class AcetabulumSpec:
    """Drawn parameters of one acetabulum (anatomical frame)."""

    side: str
    sign: float
    center: np.ndarray
    socket: JointSurface  # the bony articular surface (around the posed head)
    axis: np.ndarray  # opening axis (out of the socket)
    inclination_deg: float
    anteversion_deg: float
    rim_k: float  # rim plane at the roof's lateral edge: u . axis = rim_k at the socket surface
    rim_posterior: np.ndarray  # unit, normal to the axis: the posterior wall's side
    rim_d_post: float  # the rim level rises by this (times the radius) posteriorly
    rim_d_ant: float  # and by this anteriorly
    fossa_dir: np.ndarray
    fossa_half_angle_deg: float
    fossa_depth_mm: float
    medial_wall_mm: float
    notch_dir: np.ndarray
    labrum_mm: float
    osteophyte_mm: float
    cartilage_mm: float
    cysts: list
    sclerosis_hu: float
    sclerosis_depth_mm: float

    @property
    def rim_radius(self) -> float:
        return float(self.socket.head.radius + self.socket.space_mm)

    @property
    def medial_plane_distance(self) -> float:
        return float(self.rim_radius + self.fossa_depth_mm + self.medial_wall_mm)


def acetabulum_geometry(rng, side, sign, posed_head: HeadShape, *, space_mm, min_mm, ce_deg, oa_grade=0):
    """Draw the acetabulum around a (posed) head.

    Parameters
    ----------
    rng : numpy.random.Generator
    side, sign : str, float
    posed_head : HeadShape
        The femoral head as it sits in the socket (anatomical frame).
    space_mm, min_mm : float
        Joint-space width away from and at the superolateral load zone.
    ce_deg : float
        Lateral centre-edge angle the rim is cut for.
    oa_grade : int
        0 healthy .. 3 severe (rim osteophytes, roof sclerosis and cysts).
    """
    c = np.asarray(posed_head.center, float)
    inc = rng.uniform(35.0, 50.0)
    ant = rng.uniform(10.0, 25.0)
    axis = cup_axis(sign, inc, ant)
    # The lateral edge of the roof, where the CE angle is read, is the rim plane's cut through the outer
    # lip of the rim, about 5 mm outside the articular surface: place the plane for the CE there.
    rim_radius = posed_head.radius + space_mm
    k = rim_offset_for_ce(ce_deg, inc, ant) * (rim_radius + 5.0) / rim_radius
    narrow = _unit([sign * 0.45, 0.05, 1.0])  # superolateral load zone of the roof
    socket = JointSurface(posed_head, float(space_mm), float(min_mm), tuple(narrow), rng.uniform(35.0, 50.0))
    down = np.array([0.0, 0.0, -1.0])
    notch = _unit(down - (down @ axis) * axis)
    back = np.array([0.0, -1.0, 0.0])
    posterior = _unit(back - (back @ axis) * axis)
    # Axial acetabular sector angles about 95-110 deg posteriorly and 50-65 deg anteriorly.
    k_post, k_ant = rng.uniform(-0.1, 0.1), rng.uniform(-0.25, -0.05)
    half = rng.uniform(36.0, 42.0)
    rim_angle = np.degrees(np.arccos(-k))  # angle of the rim from the deepest point (-axis)
    beta = rim_angle + 8.0 - half  # the fossa cone reaches past the inferior rim: the notch
    fossa = _unit(np.cos(np.radians(beta)) * -axis + np.sin(np.radians(beta)) * notch)
    cysts = []
    if oa_grade >= 2:
        for _ in range(int(rng.integers(0, oa_grade + 1))):
            u = _unit(narrow + 0.3 * rng.normal(size=3))
            r = rng.uniform(1.5, 5.0)
            cysts.append((c + u * (posed_head.radius + space_mm + r + rng.uniform(1.5, 5.0)), r))
    return AcetabulumSpec(
        side=side, sign=sign, center=c, socket=socket, axis=axis, inclination_deg=inc, anteversion_deg=ant,
        rim_k=k, rim_posterior=posterior, rim_d_post=max(k_post - k, 0.0), rim_d_ant=max(k_ant - k, 0.0),
        fossa_dir=fossa, fossa_half_angle_deg=half, fossa_depth_mm=rng.uniform(3.0, 6.0),
        medial_wall_mm=rng.uniform(2.5, 5.5), notch_dir=notch, labrum_mm=rng.uniform(2.3, 3.0),
        osteophyte_mm=[0.0, rng.uniform(0.0, 1.5), rng.uniform(1.5, 3.0), rng.uniform(2.5, 4.5)][oa_grade],
        cartilage_mm=[rng.uniform(1.5, 2.5), rng.uniform(1.2, 2.0), rng.uniform(0.8, 1.5), rng.uniform(0.3, 1.0)][oa_grade],
        cysts=cysts, sclerosis_hu=[0.0, rng.uniform(0, 150), rng.uniform(200, 400), rng.uniform(350, 600)][oa_grade],
        sclerosis_depth_mm=rng.uniform(2.0, 5.0))


def _fossa(spec: AcetabulumSpec, reach_extra=0.0):
    deep = JointSurface(**{**spec.socket.__dict__, "extra": spec.fossa_depth_mm + reach_extra})
    return Intersect(deep, Cone(tuple(spec.center), tuple(spec.fossa_dir), spec.fossa_half_angle_deg, 80.0))


def _rim_plane(spec: AcetabulumSpec, outward=False, lift=0.0):
    return RimCut(tuple(spec.center), tuple(spec.axis), tuple(spec.rim_posterior), spec.rim_radius, spec.rim_k,
                  spec.rim_d_post, spec.rim_d_ant, lift, outward)


def _landmarks(spec: AcetabulumSpec, scale):
    """Landmarks of the hip bone (anatomical frame) for one side, scaled with the pelvis."""
    s, c = spec.sign, spec.center
    L = lambda x, y, z: np.array([s * x * scale, y * scale, z * scale])  # noqa: E731 - absolute, mirrored
    return {
        "asis": L(118, 48, 52), "crest_front": L(135, 20, 95), "crest_top": L(128, -15, 118),
        "crest_back": L(92, -55, 112), "psis": L(42, -82, 80), "si": L(44, -58, 52),
        "roof": c + np.array([-s * 12.0, -8.0, spec.rim_radius + 14.0]),
        "aiis": c + np.array([s * 4.0, 30.0, 30.0]),
        "tuberosity": c + np.array([-s * 32.0, -28.0, -64.0]) * np.array([1, 1, scale]),
        "spine": L(52, -52, -14),
        "pubic_body": L(16, 50, -40), "ramus_join": L(34, 26, -74),
    }


def build_hip_bone(spec: AcetabulumSpec, rng, *, scale, si_plane, symphysis_gap, texture, hu, bvtv,
                   reamed_radius=None) -> BoneObject:
    """One hip bone (innominate) as a :class:`BoneObject`.

    Parameters
    ----------
    spec : AcetabulumSpec
    rng : numpy.random.Generator
    scale : float
        Size of the pelvis relative to the average adult.
    si_plane : (point, normal)
        The ilium's sacroiliac joint surface: this bone keeps ``(p - point) . normal >= 0``.
    symphysis_gap : float
        Width of the pubic symphysis disc (mm).
    texture : callable
        Trabecular field at anatomical points.
    hu : dict
        ``marrow``, ``tissue``, ``cortical`` HU.
    bvtv : float
        Mean bone volume fraction.
    reamed_radius : float, optional
        A hip replacement's cup: the socket is a hemisphere of this radius instead.
    """
    s, c, R = spec.sign, spec.center, spec.rim_radius
    lm = _landmarks(spec, scale)
    f = spec.fossa_dir
    medial_point = c + spec.medial_plane_distance * f
    # The acetabular mass: solid bone around the socket, bounded medially by the quadrilateral plate and
    # laterally by the rim (a lip 0.5 mm proud of the rim plane).
    block = Intersect(Intersect(Ellipsoid(tuple(c + np.array([-s * 6.0, -5.0, 6.0])), (R + 12.0, R + 18.0, R + 18.0)),
                                HalfSpace(tuple(medial_point), tuple(f))),
                      _rim_plane(spec, lift=0.5))
    # Iliac wing: a plate on a sphere through the landmarks, bulging laterally (gluteal surface convex).
    pts = np.array([lm[k] for k in ("asis", "crest_front", "crest_top", "crest_back", "psis", "si", "roof", "aiis")])
    centroid = pts.mean(axis=0)
    _, _, vt = np.linalg.svd(pts - centroid)
    normal = vt[2] if vt[2][0] * s > 0 else -vt[2]
    e1, e2 = vt[0], vt[1]
    extent1 = np.abs((pts - centroid) @ e1).max() + 8.0
    extent2 = np.abs((pts - centroid) @ e2).max() + 8.0
    bend = rng.uniform(130.0, 180.0)
    mid_surface = Sphere(tuple(centroid - normal * bend + normal * 6.0), bend)
    outline = Intersect(Intersect(Ellipsoid(tuple(centroid), (extent1, extent2, 45.0), (tuple(e1), tuple(e2), tuple(normal))),
                                  HalfSpace(tuple(c + np.array([0, 0, 10.0])), (0.0, 0.0, -1.0))),
                        HalfSpace(tuple(np.array([0.0, -38.0 * scale, 30.0 * scale])), tuple(_unit([0, -0.7, -0.7]))))
    wing = ThickShell(mid_surface, outline, rng.uniform(2.0, 3.5), rng.uniform(10.0, 14.0), 14.0)
    # Sciatic buttress: the thick column from the roof back to the sacroiliac joint.
    buttress = EllipticCylinder(tuple(c + np.array([-s * 10.0, -12.0, 14.0])), tuple(lm["si"] + np.array([s * 6.0, 0, -6.0])),
                                (13.0, 9.0), (16.0, 11.0), up=(0.0, 0.0, 1.0))
    auricular = Ellipsoid(tuple(lm["si"] + np.array([s * 8.0, -6.0, 4.0])), (12.0, 26.0, 32.0))
    psis = Ellipsoid(tuple(lm["psis"] + np.array([s * 4.0, 6.0, -6.0])), (11.0, 14.0, 18.0))
    ischium = EllipticCylinder(tuple(c + np.array([-s * 4.0, -20.0, -16.0])), tuple(lm["tuberosity"]),
                               (17.0, 12.0), (13.0, 10.0), up=(0.0, 1.0, 0.0))
    tuberosity = Ellipsoid(tuple(lm["tuberosity"] + np.array([0.0, -3.0, -2.0])), (13.0, 16.0, 15.0))
    spine = Capsule(tuple(c + np.array([-s * 18.0, -30.0, -12.0])), tuple(lm["spine"]), 4.5, 2.5)
    ischial_ramus = EllipticCylinder(tuple(lm["tuberosity"] + np.array([s * 4.0, 6.0, -4.0])), tuple(lm["ramus_join"]),
                                     (8.0, 5.5), (7.0, 5.0), up=(0.0, 0.0, 1.0))
    inferior_ramus = EllipticCylinder(tuple(lm["ramus_join"]), tuple(lm["pubic_body"] + np.array([0, -2.0, -8.0])),
                                      (7.0, 5.0), (8.0, 6.0), up=(0.0, 0.0, 1.0))
    superior_ramus = EllipticCylinder(tuple(c + np.array([-s * 10.0, 20.0, -4.0])), tuple(lm["pubic_body"] + np.array([0, 0, 6.0])),
                                      (11.0, 9.0), (9.0, 7.5), up=(0.0, 0.0, 1.0))
    pubic_body = Intersect(Ellipsoid(tuple(lm["pubic_body"]), (13.0, 9.0, 19.0)),
                           HalfSpace((s * symphysis_gap / 2, 0.0, 0.0), (-s, 0.0, 0.0)))
    aiis = Ellipsoid(tuple(lm["aiis"]), (7.0, 8.0, 9.0))
    pieces = (block, wing, buttress, auricular, psis, ischium, tuberosity, spine, ischial_ramus, inferior_ramus,
              superior_ramus, pubic_body, aiis)
    body = SmoothUnion(pieces, 5.0)
    # Keep-outs: nothing covers the head beyond the rim, nothing bulges into the pelvis behind the fossa,
    # and the sacroiliac joint stays open.
    point, n_si = si_plane
    keep_out = Union((Intersect(Sphere(tuple(c), R + 10.0), _rim_plane(spec, outward=True)),
                      Intersect(Sphere(tuple(c), R + 16.0), HalfSpace(tuple(medial_point), tuple(-f)))))
    # The ilium keeps the lateral side of its sacroiliac joint surface (near the sacrum only: the plane,
    # extended, would cut through the acetabulum).
    sacral_side = Intersect(Ellipsoid((0.0, -55.0 * scale, 50.0 * scale), (70.0 * scale, 50.0 * scale, 58.0 * scale)),
                            HalfSpace(tuple(point), tuple(n_si)))
    shapes = [Subtract(Subtract(body, keep_out), sacral_side)]
    if spec.osteophyte_mm > 0 and reamed_radius is None:
        ring_r = R * np.sqrt(max(1.0 - spec.rim_k ** 2, 0.05)) + 1.0
        ring = Torus(tuple(spec.center + spec.rim_k * R * spec.axis), tuple(spec.axis), ring_r, spec.osteophyte_mm)
        shapes.append(Subtract(ring, Cone(tuple(c), tuple(spec.notch_dir), 28.0, 80.0)))
    if reamed_radius is None:
        exclude = Union((spec.socket, _fossa(spec)))
    else:
        exclude = Sphere(tuple(c), float(reamed_radius))

    def cortex_fn(x, y, z):
        return np.full(np.shape(x), hu["hip_cortex_mm"])

    def cancellous_fn(x, y, z):
        v = bvtv + TEXTURE_AMPLITUDE * bvtv * texture(x, y, z)
        out = hu["marrow"] + np.clip(v, 0.0, 0.95) * (hu["tissue"] - hu["marrow"])
        if spec.sclerosis_hu > 0 and reamed_radius is None:
            dx, dy, dz = x - c[0], y - c[1], z - c[2]
            dist = np.sqrt(dx * dx + dy * dy + dz * dz)
            n = spec.socket.narrow_dir
            cos_load = (dx * n[0] + dy * n[1] + dz * n[2]) / np.maximum(dist, 1e-6)
            depth = dist - R
            band = np.clip((cos_load - 0.7) / 0.2, 0, 1) * np.clip(1.0 - (depth - 1.5) / spec.sclerosis_depth_mm, 0, 1)
            out = out + spec.sclerosis_hu * band
        return out.astype(np.float32)

    def cortical_fn(x, y, z):
        return np.full(np.shape(x), hu["cortical"], dtype=np.float32) + 40.0 * texture(x * 0.5, y * 0.5, z * 0.5)

    inclusions = [] if reamed_radius is not None else [("fluid", Sphere(tuple(p), float(r))) for p, r in spec.cysts]
    return BoneObject(name=f"hip_{spec.side}", part=PARTS[f"hip_{spec.side}"], shapes=shapes,
                      cortex_mm=hu["hip_cortex_mm"], exclude=exclude, cortex_fn=cortex_fn,
                      cancellous_fn=cancellous_fn, cortical_fn=cortical_fn, inclusions=inclusions)


def acetabular_joint_tissue(spec: AcetabulumSpec):
    """Soft tissues of the socket, painted before the bones (anatomical frame, not posed).

    Pulvinar fat in the fossa and notch, the lunate cartilage (everything
    between head and socket outside the fossa and inside the rim), the
    labrum on the rim and the transverse ligament across the notch.
    """
    c, R = spec.center, spec.rim_radius
    rim = _rim_plane(spec)
    fossa_fat = _fossa(spec, reach_extra=0.5)
    lunate = Subtract(Intersect(JointSurface(**{**spec.socket.__dict__, "extra": 0.0}), rim),
                      Cone(tuple(c), tuple(spec.fossa_dir), spec.fossa_half_angle_deg, 80.0))
    ring_c = c + spec.rim_k * R * spec.axis
    ring_r = R * np.sqrt(max(1.0 - spec.rim_k ** 2, 0.05))
    notch_cone = Cone(tuple(c), tuple(spec.notch_dir), 24.0, 80.0)
    # The labrum: a ring of about 5 mm section on the (warped) rim, outside the head.
    on_rim = Intersect(Subtract(Sphere(tuple(c), R + 2.0 * spec.labrum_mm), Sphere(tuple(c), R - 1.0)),
                       _rim_plane(spec, outward=True, lift=-spec.labrum_mm))
    labrum = Subtract(Subtract(Intersect(on_rim, _rim_plane(spec, lift=spec.labrum_mm)), notch_cone), spec.socket.head)
    # Transverse ligament across the notch: a band between the two horns of the rim.
    side_dir = _unit(np.cross(spec.axis, spec.notch_dir))
    half_w = ring_r * np.sin(np.radians(24.0))
    mid = ring_c + ring_r * np.cos(np.radians(24.0)) * spec.notch_dir
    transverse = Capsule(tuple(mid - half_w * side_dir), tuple(mid + half_w * side_dir), 2.5)
    return [("fat", fossa_fat, None), ("cartilage", lunate, None), ("fibrocartilage", labrum, None),
            ("ligament", transverse, None)]


def build_sacrum_l5(rng, *, scale, si_planes, texture, hu, bvtv):
    """Sacrum (S1-S5 with alae) and L5 (body and posterior arch), and the L5-S1 disc.

    Returns
    -------
    bone : BoneObject
    discs : list of (material, shape)
        The L5-S1 intervertebral disc.
    """
    S = scale
    vertebrae = []
    # Sacral bodies along a kyphotic curve, tapering.
    path = [(0.0, -30.0, 70.0), (0.0, -45.0, 45.0), (0.0, -62.0, 24.0), (0.0, -78.0, 6.0), (0.0, -92.0, -10.0)]
    widths = [(24.0, 16.0, 14.0), (20.0, 13.0, 13.0), (16.0, 10.0, 11.0), (12.0, 8.0, 9.0), (8.0, 6.0, 7.0)]
    for p, w in zip(path, widths):
        vertebrae.append(Ellipsoid(tuple(np.array(p) * S), tuple(np.array(w) * S),
                                   ((1.0, 0, 0), tuple(_unit([0, 0.8, -0.6])), tuple(_unit([0, 0.6, 0.8])))))
    alae = Ellipsoid((0.0, -48.0 * S, 55.0 * S), (62.0 * S, 24.0 * S, 30.0 * S),
                     ((1.0, 0, 0), tuple(_unit([0, 0.9, -0.45])), tuple(_unit([0, 0.45, 0.9]))))
    lower_wings = Ellipsoid((0.0, -68.0 * S, 22.0 * S), (42.0 * S, 14.0 * S, 26.0 * S),
                            ((1.0, 0, 0), tuple(_unit([0, 0.8, -0.6])), tuple(_unit([0, 0.6, 0.8]))))
    crest = Capsule((0.0, -80.0 * S, 60.0 * S), (0.0, -100.0 * S, 10.0 * S), 6.0)
    sacrum = SmoothUnion(tuple(vertebrae + [alae, lower_wings, crest]), 6.0)
    for point, normal in si_planes:  # the sacral joint surfaces: keep (p - point) . normal <= 0
        sacrum = Intersect(sacrum, HalfSpace(tuple(point), tuple(normal)))
    body = EllipticCylinder((0.0, -22.0 * S, 92.0 * S), (0.0, -20.0 * S, 119.0 * S), (25.0 * S, 17.0 * S),
                            (26.0 * S, 18.0 * S), up=(1.0, 0.0, 0.0))
    arch = [Capsule((s * 14.0 * S, -36.0 * S, 108.0 * S), (s * 14.0 * S, -52.0 * S, 108.0 * S), 5.0) for s in (-1, 1)]
    arch += [Capsule((s * 14.0 * S, -52.0 * S, 106.0 * S), (0.0, -62.0 * S, 104.0 * S), 4.5) for s in (-1, 1)]
    arch += [Capsule((0.0, -62.0 * S, 104.0 * S), (0.0, -88.0 * S, 98.0 * S), 5.0)]
    arch += [Capsule((s * 16.0 * S, -44.0 * S, 110.0 * S), (s * 48.0 * S, -40.0 * S, 112.0 * S), 6.0, 4.0) for s in (-1, 1)]
    l5 = SmoothUnion(tuple([body] + arch), 3.0)
    canal = EllipticCylinder((0.0, -46.0 * S, 125.0 * S), (0.0, -84.0 * S, 5.0 * S), (9.0 * S, 6.0 * S), (6.0 * S, 4.0 * S),
                             up=(1.0, 0.0, 0.0))

    def cancellous_fn(x, y, z):
        v = bvtv + TEXTURE_AMPLITUDE * bvtv * texture(x, y, z)
        return (hu["marrow"] + 20.0 + np.clip(v, 0.0, 0.95) * (hu["tissue"] - hu["marrow"])).astype(np.float32)

    def cortical_fn(x, y, z):
        return np.full(np.shape(x), hu["cortical"] * 0.8, dtype=np.float32)

    bone = BoneObject(name="sacrum_l5", part=PARTS["other_bone"], shapes=[Subtract(sacrum, canal), l5],
                      cortex_mm=hu["hip_cortex_mm"], exclude=canal, cancellous_fn=cancellous_fn,
                      cortical_fn=cortical_fn)
    disc = EllipticCylinder((0.0, -24.0 * S, 80.0 * S), (0.0, -22.0 * S, 93.0 * S), (25.0 * S, 17.0 * S), up=(1.0, 0.0, 0.0))
    return bone, [("fibrocartilage", disc, None)]

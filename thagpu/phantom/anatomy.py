"""Random hip anatomy in an anatomical frame (RAS mm, origin midway between the hip centres).

The frame's axes are the patient's: +x right, +y anterior, +z superior; the
pose transform places it in the scanner later. Sizes follow adult anatomy:
femoral heads of radius 20-28 mm in concentric sockets, necks at 120-135 deg
to the shafts, acetabular openings inclined 35-50 deg and anteverted 10-25 deg
(radiographic definitions, Murray 1993).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .shapes import (AsphericalSphere, Capsule, Ellipsoid, HalfSpace, Intersect, Sphere,
                     Subtract)

__all__ = ["Side", "BoneObject", "Implant", "Anatomy", "sample_anatomy", "cup_axis"]

SIDES = {"left": -1.0, "right": 1.0}  # sign of x on the patient's side


def _unit(v):
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def _random_unit(rng):
    return _unit(rng.normal(size=3))


def cup_axis(sign: float, inclination_deg: float, anteversion_deg: float) -> np.ndarray:
    """Unit axis of the acetabular opening (pointing out of the socket).

    Radiographic definitions: the inclination is the angle between the
    longitudinal axis and the opening axis projected on the coronal plane, the
    anteversion the angle between the opening axis and the coronal plane;
    :func:`thagpu.afs.angles.radiographic_angles` is its inverse.
    """
    inc, ant = np.radians(inclination_deg), np.radians(anteversion_deg)
    return np.array([sign * np.sin(inc) * np.cos(ant), np.sin(ant), -np.cos(inc) * np.cos(ant)])


@dataclass
class Side:
    """True parameters of one hip (anatomical frame)."""

    name: str
    sign: float
    head_center: np.ndarray
    head_radius: float
    head_shape: AsphericalSphere
    joint_space_mm: float
    socket_radius: float
    inclination_deg: float
    anteversion_deg: float
    cup_axis: np.ndarray
    neck_shaft_deg: float
    neck_junction: np.ndarray
    shaft_dir: np.ndarray


@dataclass
class BoneObject:
    """One bone: a union of shapes with a cortical shell, optionally a marrow cavity.

    ``part`` identifies it in the truth map (see :data:`PARTS`); ``exclude``
    is removed from the union (the joint space and head stay free of pelvis).
    ``cortex_ramp`` = (a, b, extra): the cortex thickens by up to ``extra`` mm
    from point ``a`` to point ``b`` (the femoral shaft's thick diaphysis).
    """

    name: str
    part: int
    shapes: list
    cortex_mm: float
    cortex_ramp: tuple | None = None
    marrow: object | None = None
    exclude: object | None = None  # carved out of every shape (the socket cavity of a hip bone)
    # Anatomic model only (thagpu.phantom.anatomic); None keeps the simple model's behaviour.
    pose: tuple | None = None  # (rotation (3, 3), pivot (3,)): the bone is drawn in its own frame, then rotated
    cortex_fn: object | None = None  # (x, y, z) -> cortex thickness in mm
    cancellous_fn: object | None = None  # (x, y, z) -> HU of cancellous bone (texture, sclerosis)
    cortical_fn: object | None = None  # (x, y, z) -> HU of cortical bone
    inclusions: list = field(default_factory=list)  # (material name, shape): cysts inside the bone


@dataclass
class Implant:
    """A total hip replacement on one side: metal ball, neck, stem and cup, PE liner."""

    side: str
    metal: list
    liner: object
    pose: tuple | None = None  # anatomic model: (rotation, pivot) of the femoral parts
    femoral_metal: list = field(default_factory=list)  # posed with the femur (anatomic model)


#: Values of the truth "parts" map, before the label schema is applied.
PARTS = {"none": 0, "femur_left": 1, "femur_right": 2, "hip_left": 3, "hip_right": 4,
         "other_bone": 5, "metal": 6}


@dataclass
class Anatomy:
    sides: dict
    bones: list
    implant: Implant | None
    body_radii: tuple
    fat_mm: float
    soft_tissue: list = field(default_factory=list)  # (material name, shape)
    sockets: list = field(default_factory=list)  # (cavity shape, head shape, coverage half-space)
    # Anatomic model only: soft tissue of the joints painted before the bones, (material, shape, pose or None).
    joint_tissue: list = field(default_factory=list)
    organs: list = field(default_factory=list)  # (material, shape) painted over fat or muscle
    extra_implants: list = field(default_factory=list)  # further Implants (both sides replaced)
    continuous: bool = False  # bones carry HU fields (cancellous_fn, cortical_fn)
    thighs: dict | None = None  # side -> (hip centre, shaft direction): thighs follow the posed femurs


def _side(rng, name, sign, half_width, radius, joint_space, aspherical):
    center = np.array([sign * half_width, rng.uniform(-3, 3), rng.uniform(-3, 3)])
    a2, a3 = 0.0, 0.0
    if aspherical:
        a2 = rng.uniform(-0.6, 0.6)
        a3 = rng.uniform(-0.35, 0.35)
    head = AsphericalSphere(tuple(center), radius, a2, tuple(_random_unit(rng)), a3,
                            tuple(_random_unit(rng)))
    inc = rng.uniform(35, 50)
    ant = rng.uniform(10, 25)
    neck_shaft = rng.uniform(120, 135)
    femoral_anteversion = np.radians(rng.uniform(5, 20))
    # Shaft runs down and slightly medially (anatomical axis about 6 deg off vertical).
    shaft_dir = _unit([-sign * np.sin(np.radians(6)), 0.0, -np.cos(np.radians(6))])
    medial = _unit(np.cross(shaft_dir, [0.0, 1.0, 0.0]) * sign)
    if medial[0] * sign > 0:
        medial = -medial
    alpha = np.radians(neck_shaft)
    neck_dir = (np.cos(alpha) * shaft_dir + np.sin(alpha) * (
        np.cos(femoral_anteversion) * medial + np.sin(femoral_anteversion) * np.array([0, 1.0, 0])))
    neck_dir = _unit(neck_dir)  # from the neck base towards the head
    junction = center - rng.uniform(45, 55) * neck_dir
    return Side(name=name, sign=sign, head_center=center, head_radius=radius, head_shape=head,
                joint_space_mm=joint_space, socket_radius=radius + joint_space,
                inclination_deg=inc, anteversion_deg=ant, cup_axis=cup_axis(sign, inc, ant),
                neck_shaft_deg=neck_shaft, neck_junction=junction, shaft_dir=shaft_dir)


def _femur(side: Side, rng, shaft_length, implant: bool) -> tuple[BoneObject, list]:
    s, c, r, j, sd = side.sign, side.head_center, side.head_radius, side.neck_junction, side.shaft_dir
    shaft_radius = rng.uniform(12.5, 15.0)
    shapes = [
        Capsule(tuple(j - 15 * sd), tuple(j + 45 * sd), 0.8 * r, shaft_radius),  # intertrochanteric
        Capsule(tuple(j + 30 * sd), tuple(j + shaft_length * sd), shaft_radius),  # shaft
        Ellipsoid(tuple(j + np.array([s * 12.0, -6.0, 14.0])), (13.0, 13.0, 18.0)),  # greater trochanter
        Sphere(tuple(j + 38 * sd + np.array([-s * 11.0, -9.0, 0.0])), 8.0),  # lesser trochanter
    ]
    if not implant:
        shapes = [side.head_shape, Capsule(tuple(c), tuple(j), 0.62 * r, 0.72 * r)] + shapes
    cortex_extra = rng.uniform(2.5, 4.0)
    marrow = Capsule(tuple(j + 50 * sd), tuple(j + (shaft_length + 10) * sd), shaft_radius - 2.0 - cortex_extra)
    bone = BoneObject(name=f"femur_{side.name}", part=PARTS[f"femur_{side.name}"], shapes=shapes,
                      cortex_mm=rng.uniform(1.6, 2.4),
                      cortex_ramp=(tuple(j + 20 * sd), tuple(j + 70 * sd), cortex_extra),
                      marrow=marrow)
    return bone, shapes


def _hip_bone(side: Side, rng, rim_mm) -> tuple[BoneObject, tuple]:
    s, c, r = side.sign, side.head_center, side.head_radius
    cavity = AsphericalSphere(**{**side.head_shape.__dict__, "offset": side.joint_space_mm})
    # The bony socket covers a little more than a hemisphere around the opening axis.
    coverage = HalfSpace(tuple(c + 0.12 * r * side.cup_axis), tuple(side.cup_axis))
    mass = Subtract(Intersect(Sphere(tuple(c), side.socket_radius + rim_mm), coverage), cavity)
    wing_normal = _unit([s, 0.35, -0.25])
    wing_t1 = _unit(np.cross(wing_normal, [0.0, 0.0, 1.0]))
    wing_t2 = _unit(np.cross(wing_normal, wing_t1))
    symphysis = np.array([s * 12.0, 52.0 + rng.uniform(-4, 4), -38.0 + rng.uniform(-4, 4)])
    tuberosity = c + np.array([-s * 15.0, -25.0, -70.0])
    shapes = [
        mass,
        # Ilium: the acetabular roof column and the flared wing up to the crest.
        Capsule(tuple(c + np.array([-s * 4.0, -8.0, 12.0])), tuple(c + np.array([-s * 8.0, -12.0, 50.0])), 16.0),
        Ellipsoid(tuple(c + np.array([-s * 8.0, -12.0, 72.0])), (7.0, 75.0, 55.0),
                  (tuple(wing_normal), tuple(wing_t1), tuple(wing_t2))),
        # Posterior ilium towards the sacroiliac joint.
        Capsule(tuple(c + np.array([-s * 10.0, -25.0, 30.0])), (s * 44.0, -58.0, 58.0), 12.0),
        # Ischium down to the tuberosity; pubic rami to the symphysis (obturator foramen between).
        Capsule(tuple(c + np.array([-s * 5.0, -15.0, -20.0])), tuple(tuberosity), 11.0),
        Capsule(tuple(c + np.array([-s * 15.0, 15.0, -10.0])), tuple(symphysis), 8.0),
        Capsule(tuple(symphysis + np.array([0.0, -5.0, -10.0])), tuple(tuberosity), 7.0),
    ]
    # The rim plane bounds the socket: the ilium, ischium and pubis join the acetabulum at its rim
    # and do not wrap the head beyond it (in the inferior notch real bone covers even less).
    opening = Intersect(Sphere(tuple(c), side.socket_radius + rim_mm), HalfSpace(coverage.point, tuple(-side.cup_axis)))
    shapes = [mass] + [Subtract(shape, opening) for shape in shapes[1:]]
    bone = BoneObject(name=f"hip_{side.name}", part=PARTS[f"hip_{side.name}"], shapes=shapes,
                      cortex_mm=rng.uniform(1.5, 2.5), exclude=cavity)
    return bone, (cavity, side.head_shape, coverage)


def _implant(side: Side, rng) -> Implant:
    c, j, sd = side.head_center, side.neck_junction, side.shaft_dir
    ball = rng.uniform(14.0, 18.0)
    cup_outer = side.socket_radius
    cup_inner = cup_outer - rng.uniform(3.0, 4.5)
    coverage = HalfSpace(tuple(c), tuple(side.cup_axis))
    cup = Intersect(Subtract(Sphere(tuple(c), cup_outer), Sphere(tuple(c), cup_inner)), coverage)
    liner = Intersect(Subtract(Sphere(tuple(c), cup_inner), Sphere(tuple(c), ball)), coverage)
    metal = [Sphere(tuple(c), ball), Capsule(tuple(c), tuple(j), 6.5),
             Capsule(tuple(j - 5 * sd), tuple(j + 140 * sd), 8.0, 5.0), cup]
    return Implant(side=side.name, metal=metal, liner=liner)


def sample_anatomy(rng: np.random.Generator, *, joint_space_mm=(1.0, 4.0), aspherical=True,
                   implant_side=None, vessels_calcified=True, bowel_gas=True) -> Anatomy:
    """Draw one patient's hip anatomy.

    Parameters
    ----------
    rng : numpy.random.Generator
        The only source of randomness.
    joint_space_mm : (float, float)
        Range of the cartilage joint-space width, drawn per side (0 = bone on bone).
    aspherical : bool
        Deform the heads by up to 1 mm from their sphere.
    implant_side : {"left", "right", None}
        Replace that side's head and neck by a total hip replacement.
    vessels_calcified, bowel_gas : bool
        Add femoral vessels with calcified plaques, and bowel gas pockets.
    """
    half_width = rng.uniform(85.0, 100.0)
    radius = rng.uniform(20.0, 28.0)
    sides = {}
    for name, sign in SIDES.items():
        side_radius = float(np.clip(radius + rng.uniform(-0.8, 0.8), 20.0, 28.0))
        sides[name] = _side(rng, name, sign, half_width, side_radius,
                            float(rng.uniform(*joint_space_mm)), aspherical)
    bones, sockets = [], []
    implant = _implant(sides[implant_side], rng) if implant_side else None
    shaft_length = 400.0
    rim = rng.uniform(9.0, 13.0)
    for name, side in sides.items():
        femur, _ = _femur(side, rng, shaft_length, implant is not None and implant.side == name)
        hip, socket = _hip_bone(side, rng, rim)
        bones += [femur, hip]
        sockets.append(socket)
    sacrum_axes = (tuple(_unit([1, 0, 0])), tuple(_unit([0, np.cos(0.5), np.sin(0.5)])),
                   tuple(_unit([0, -np.sin(0.5), np.cos(0.5)])))
    bones.append(BoneObject(
        name="sacrum_l5", part=PARTS["other_bone"], cortex_mm=rng.uniform(1.2, 2.0),
        shapes=[Ellipsoid((0.0, -58.0, 50.0), (46.0, 20.0, 50.0), sacrum_axes),
                Capsule((0.0, -32.0, 100.0), (0.0, -28.0, 126.0), 22.0)]))
    body_radii = (rng.uniform(170.0, 190.0), rng.uniform(112.0, 128.0))
    soft = [("fluid", Ellipsoid((0.0, 38.0, -5.0), tuple(rng.uniform(22, 32, size=3))))]
    if bowel_gas:
        for _ in range(int(rng.integers(3, 7))):
            soft.append(("gas", Ellipsoid((rng.uniform(-40, 40), rng.uniform(5, 45), rng.uniform(45, 100)),
                                          tuple(rng.uniform(4, 10, size=3)))))
    for side in sides.values():
        top = side.head_center + np.array([-side.sign * 15.0, 38.0, 60.0])
        bottom = side.head_center + np.array([side.sign * 5.0, 30.0, -200.0])
        soft.append(("blood", Capsule(tuple(top), tuple(bottom), 4.0)))
        if vessels_calcified:
            for _ in range(int(rng.integers(3, 8))):
                t = rng.uniform(0.1, 0.9)
                p = top + t * (bottom - top) + _random_unit(rng) * 3.5
                soft.append(("calcification", Sphere(tuple(p), float(rng.uniform(1.0, 2.2)))))
    return Anatomy(sides=sides, bones=bones, implant=implant, body_radii=body_radii,
                   fat_mm=float(rng.uniform(12.0, 35.0)), soft_tissue=soft, sockets=sockets)

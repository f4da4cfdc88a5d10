"""The anatomic hip phantom: a patient drawn from adult anatomy, OA and bone-quality mixes.

Assembles :mod:`.femur` and :mod:`.pelvis` with soft tissues (pelvic fat,
bladder with or without excreted contrast, rectum, bowel loops with gas,
iliac/femoral arteries and veins with or without contrast, calcified plaques)
and hip replacements (cup with screws, liner, ball, neck and stem), poses each
femur about its head centre, and computes the true quantities: least-squares
head sphere of the true head surface, joint space (min, mean) over the lunate
surface, lateral centre-edge angle measured on the bone. Numbers and their
sources: docs/phantom.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .anatomy import Anatomy, Implant, Side
from .femur import build_femur, femoral_joint_tissue, femur_geometry, head_surface_points
from .pelvis import acetabular_joint_tissue, acetabulum_geometry, build_hip_bone, build_sacrum_l5
from .shapes import (Capsule, Ellipsoid, HalfSpace, HeadShape, Intersect, Sphere, Subtract,
                     sphere_directions, union_sdf)
from .texture import make_trabecular_field

__all__ = ["AnatomicOptions", "sample_anatomic", "fit_sphere", "rotation_about"]

SIDES = {"left": -1.0, "right": 1.0}


@dataclass(frozen=True)
class AnatomicOptions:
    """What kind of patients a preset draws.

    Attributes
    ----------
    oa_weights : tuple of 4 floats
        Probabilities of osteoarthritis grade 0 (healthy) .. 3 (severe) per hip.
    osteoporotic_probability : float
        Share of patients with osteoporotic bone.
    dysplasia_probability : float
        Share of hips with a lateral centre-edge angle of 10-20 deg.
    implant : {None, "one", "both", "some"}
        Hip replacements: none, on one side, on both sides, or on either/both sides sometimes.
    flexion_max_deg : float
        Largest hip flexion drawn.
    """

    oa_weights: tuple = (0.25, 0.25, 0.3, 0.2)
    osteoporotic_probability: float = 0.3
    dysplasia_probability: float = 0.1
    implant: str | None = None
    flexion_max_deg: float = 45.0


def _unit(v):
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def rotation_about(axis: int, degrees: float) -> np.ndarray:
    """Rotation matrix about a coordinate axis (0 = x, 1 = y, 2 = z)."""
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    m = np.eye(3)
    a, b = [(1, 2), (0, 2), (0, 1)][axis]
    m[a, a], m[a, b], m[b, a], m[b, b] = c, -s, s, c
    return m


def fit_sphere(points) -> tuple[np.ndarray, float]:
    """Least-squares sphere (centre, radius) through ``points`` (geometric, Gauss-Newton from the algebraic fit)."""
    p = np.asarray(points, float)
    a = np.c_[2 * p, np.ones(len(p))]
    sol = np.linalg.lstsq(a, (p * p).sum(axis=1), rcond=None)[0]
    c = sol[:3]
    r = np.sqrt(sol[3] + c @ c)
    for _ in range(10):
        d = p - c
        dist = np.linalg.norm(d, axis=1)
        jac = np.c_[-d / dist[:, None], -np.ones(len(p))]
        step = np.linalg.lstsq(jac, -(dist - r), rcond=None)[0]
        c, r = c + step[:3], r + step[3]
        if np.abs(step).max() < 1e-10:
            break
    return c, float(r)


def _posed_head(head: HeadShape, rotation) -> HeadShape:
    """The head shape after rotating the femur about the head centre."""
    return HeadShape(**{**head.__dict__, "e2": tuple(rotation @ head.e2), "e3": tuple(rotation @ head.e3),
                        "flat_dir": tuple(rotation @ np.asarray(head.flat_dir))})


def _bone_sdf(bone, pts):
    x, y, z = pts.T
    d = union_sdf(bone.shapes, x, y, z)
    if bone.exclude is not None:
        d = np.maximum(d, -bone.exclude.sdf(x, y, z))
    return d


def _centre_edge_angle(hip_bone, center, sign, rim_radius) -> float:
    """Lateral CE angle measured on the bone: the most lateral roof direction (coronal plane) still over bone."""
    best = 0.0
    radial = np.linspace(rim_radius + 0.3, rim_radius + 6.0, 12)
    for theta in np.arange(-10.0, 70.0, 1.0):
        u = np.array([sign * np.sin(np.radians(theta)), 0.0, np.cos(np.radians(theta))])
        pts = center + radial[:, None] * u
        if (_bone_sdf(hip_bone, pts) < 0).any():
            best = theta
        elif theta > 0:
            break
    return float(best)


def _implant(side_name, spec_f, spec_a, pose, rng):
    c = spec_a.center
    ball = rng.uniform(14.0, 18.0)
    cup_outer = spec_a.rim_radius + rng.uniform(0.5, 2.5)
    cup_inner = cup_outer - rng.uniform(3.0, 5.0)
    coverage = HalfSpace(tuple(c), tuple(spec_a.axis))
    cup = Intersect(Subtract(Sphere(tuple(c), cup_outer), Sphere(tuple(c), cup_inner)), coverage)
    liner = Intersect(Subtract(Sphere(tuple(c), cup_inner), Sphere(tuple(c), ball)), coverage)
    screws = []
    for _ in range(int(rng.integers(1, 4))):
        d = _unit(-spec_a.axis + np.array([0.0, -0.35, 0.6]) + 0.25 * rng.normal(size=3))
        screws.append(Capsule(tuple(c + d * (cup_outer - 3.0)), tuple(c + d * (cup_outer + rng.uniform(20.0, 40.0))), 3.25))
    j, sd, n = spec_f.junction, spec_f.shaft_dir, spec_f.neck_dir
    femoral = [Sphere(tuple(c), ball), Capsule(tuple(c), tuple(j + 8.0 * n), 6.5),
               Capsule(tuple(j + 8.0 * n - 5.0 * sd), tuple(j + rng.uniform(120.0, 150.0) * sd), 8.5, 5.0)]
    return Implant(side=side_name, metal=[cup] + screws, liner=liner, pose=pose, femoral_metal=femoral)


def _soft_tissue(rng, sides, scale, contrast):
    """Organs (material, shape) painted over fat and muscle, in painting order."""
    # Intermuscular fat planes: thin shells around each hip (between the gluteal layers, around the
    # iliopsoas and the thigh muscles), cut to sectors.
    organs = []
    for side in sides.values():
        s, c = side.sign, side.head_center
        for radius, centre_shift, sector in ((rng.uniform(45, 55), (s * 10.0, -15.0, 20.0), (s * 0.6, -1.0, 0.1)),
                                             (rng.uniform(70, 85), (s * 5.0, -10.0, 30.0), (s * 0.4, -1.0, 0.3)),
                                             (rng.uniform(38, 46), (-s * 5.0, 30.0, -40.0), (s * 0.2, 1.0, -0.2)),
                                             (rng.uniform(50, 60), (s * 15.0, 10.0, -120.0), (-s * 0.6, 0.3, 0.0))):
            centre = c + np.array(centre_shift)
            shell = Subtract(Sphere(tuple(centre), radius + rng.uniform(1.5, 3.0)), Sphere(tuple(centre), radius))
            direction = _unit(sector)
            organs.append(("fat", Intersect(shell, HalfSpace(tuple(centre + direction * radius * 0.2), tuple(-direction)))))
    organs.append(("fat", Ellipsoid((0.0, 8.0, 20.0 * scale), (48.0 * scale, 45.0 * scale, 62.0 * scale))))
    bladder_c = np.array([0.0, rng.uniform(25.0, 35.0), rng.uniform(-15.0, 10.0)])
    bladder_r = rng.uniform([28.0, 22.0, 22.0], [48.0, 34.0, 38.0])
    bladder = Ellipsoid(tuple(bladder_c), tuple(bladder_r))
    organs.append(("fluid", bladder))
    if contrast["bladder"]:
        level = bladder_c[1] + rng.uniform(-0.9, 0.2) * bladder_r[1]
        organs.append(("contrast", Intersect(bladder, HalfSpace((0.0, level, 0.0), (0.0, 1.0, 0.0)))))
    rectum = Capsule((0.0, -62.0 * scale, 25.0 * scale), (0.0, -45.0 * scale, -45.0), rng.uniform(11.0, 17.0))
    organs.append(("muscle", rectum))
    organs.append(("gas", Sphere((rng.uniform(-5, 5), -50.0 * scale, rng.uniform(-20.0, 10.0)), rng.uniform(3.0, 9.0))))
    for _ in range(int(rng.integers(4, 9))):
        a = np.array([rng.uniform(-55, 55), rng.uniform(-10, 45), rng.uniform(45, 125)]) * scale
        b = a + _unit(rng.normal(size=3)) * rng.uniform(25, 60)
        r = rng.uniform(10.0, 17.0)
        organs.append(("fluid" if rng.uniform() < 0.5 else "muscle", Capsule(tuple(a), tuple(b), r)))
        if rng.uniform() < 0.7:  # gas rises: the anterior part of the loop
            organs.append(("gas", Sphere(tuple((a + b) / 2 + np.array([0.0, 0.5 * r, 0.0])), r * rng.uniform(0.4, 0.7))))
    for side in sides.values():
        s, c = side.sign, side.head_center
        top = np.array([s * 45.0 * scale, 0.0, 110.0 * scale])
        brim = np.array([s * 70.0 * scale, 35.0, 40.0 * scale])
        groin = c + np.array([-s * 5.0, side.head_radius + 18.0, 0.0])
        low = c + np.array([s * 5.0, 35.0, -200.0])
        for material, offset, radius in (("blood", 0.0, rng.uniform(3.5, 4.5)), ("vein", -s * 11.0, rng.uniform(5.0, 6.5))):
            shift = np.array([offset, -3.0 if material == "vein" else 0.0, 0.0])
            for a, b in ((top, brim), (brim, groin), (groin, low)):
                organs.append((material, Capsule(tuple(a + shift), tuple(b + shift), radius)))
        for _ in range(int(rng.integers(0, 7))):
            a, b = [(top, brim), (brim, groin), (groin, low)][int(rng.integers(3))]
            p = a + rng.uniform(0.1, 0.9) * (b - a) + _unit(rng.normal(size=3)) * 3.8
            organs.append(("calcification", Sphere(tuple(p), float(rng.uniform(0.8, 2.0)))))
    return organs


def sample_anatomic(rng: np.random.Generator, options: AnatomicOptions = AnatomicOptions(), *,
                    joint_space_mm=None, implant_side=None):
    """Draw one patient of the anatomic model.

    Parameters
    ----------
    rng : numpy.random.Generator
        The only source of randomness.
    options : AnatomicOptions
    joint_space_mm : (float, float), optional
        Force the joint-space width range (healthy width and OA minimum both drawn from it).
    implant_side : {"left", "right", "both"}, optional
        Force hip replacements on that side (or both).

    Returns
    -------
    anatomy : Anatomy
        With per-side :class:`Side` whose ``head_center``/``head_radius`` are the
        least-squares sphere of the true head surface.
    info : dict
        Per-side truth beyond the :class:`Side` fields, and case-level values.
    """
    scale = rng.uniform(0.92, 1.08)
    half_width = 92.0 * scale + rng.uniform(-5.0, 5.0)
    radius = rng.uniform(21.0, 27.0)
    osteoporotic = bool(rng.uniform() < options.osteoporotic_probability)
    if implant_side is not None:
        implants = ("left", "right") if implant_side == "both" else (implant_side,)
    elif options.implant == "one":
        implants = (("left", "right")[int(rng.integers(2))],)
    elif options.implant == "both":
        implants = ("left", "right")
    elif options.implant == "some":
        implants = [(), ("left",), ("right",), ("left", "right")][int(rng.integers(4))]
    else:
        implants = ()
    cortical = rng.uniform(700.0, 1100.0) if osteoporotic else rng.uniform(1200.0, 1900.0)
    marrow = rng.uniform(-40.0, 30.0)
    target = rng.uniform(50.0, 140.0) if osteoporotic else rng.uniform(180.0, 380.0)
    bvtv = (target - marrow) / (cortical - marrow)
    hu = {"marrow": marrow, "tissue": cortical, "cortical": cortical,
          "hip_cortex_mm": rng.uniform(0.6, 1.0) if osteoporotic else rng.uniform(1.0, 1.8)}
    texture = make_trabecular_field(rng)
    si_gap = rng.uniform(2.0, 4.0)
    symphysis_gap = rng.uniform(4.0, 6.0)
    contrast = {"bladder": bool(rng.uniform() < 0.4), "arteries": bool(rng.uniform() < 0.5)}
    sides, bones, joint_tissue, info_sides, implant_objs = {}, [], [], {}, []
    si_sacrum = []
    for name, sign in SIDES.items():
        oa = int(rng.choice(4, p=np.asarray(options.oa_weights) / np.sum(options.oa_weights)))
        r = float(np.clip(radius + rng.uniform(-0.8, 0.8), 20.0, 28.0))
        center = np.array([sign * half_width, rng.uniform(-3, 3), rng.uniform(-3, 3)])
        spec_f = femur_geometry(rng, name, sign, center, r, oa_grade=oa, osteoporotic=osteoporotic)
        flex = rng.uniform(0.0, options.flexion_max_deg) if rng.uniform() < 0.3 else rng.uniform(-5.0, 12.0)
        abduction = rng.uniform(-5.0, 15.0)
        rotation_deg = rng.uniform(-20.0, 20.0)
        pose_rot = rotation_about(0, flex) @ rotation_about(1, -sign * abduction) @ rotation_about(2, sign * rotation_deg)
        pose = (pose_rot, center)
        if joint_space_mm is not None:
            space = rng.uniform(*joint_space_mm)
            smallest = min(space, rng.uniform(*joint_space_mm))
        else:
            space = rng.uniform(3.5, 5.0)
            smallest = [space * rng.uniform(0.75, 1.0), rng.uniform(2.0, 3.0), rng.uniform(1.0, 2.0),
                        rng.uniform(0.0, 1.0)][oa]
        dysplastic = rng.uniform() < options.dysplasia_probability
        ce_target = rng.uniform(10.0, 20.0) if dysplastic else rng.uniform(20.0, 42.0)
        posed_head = _posed_head(spec_f.head, pose_rot)
        spec_a = acetabulum_geometry(rng, name, sign, posed_head, space_mm=space, min_mm=smallest,
                                     ce_deg=ce_target, oa_grade=oa)
        q = np.array([sign * 44.0 * scale, -58.0 * scale, 52.0 * scale])
        n_si = _unit([sign * 1.0, -0.35, 0.0])
        has_implant = name in implants
        implant = _implant(name, spec_f, spec_a, pose, rng) if has_implant else None
        hip = build_hip_bone(spec_a, rng, scale=scale, si_plane=(q + n_si * si_gap / 2, n_si),
                             symphysis_gap=symphysis_gap, texture=texture, hu=hu, bvtv=bvtv,
                             reamed_radius=(implant.metal[0].a.a.radius if has_implant else None))
        si_sacrum.append((q - n_si * si_gap / 2, n_si))
        femur = build_femur(spec_f, pose, texture=texture, hu=hu, bvtv=bvtv, implant=has_implant)
        bones += [femur, hip]
        if has_implant:
            implant_objs.append(implant)
        else:
            joint_tissue += femoral_joint_tissue(spec_f, pose)
            joint_tissue += acetabular_joint_tissue(spec_a)
            fovea_point = pose_rot @ (spec_f.fovea_dir * (r - 1.0)) + center
            fossa_point = center + spec_a.fossa_dir * (spec_a.rim_radius + spec_a.fossa_depth_mm * 0.5)
            joint_tissue.append(("ligament", Capsule(tuple(fovea_point), tuple(fossa_point), rng.uniform(2.5, 3.5)), None))
        # Truth: least-squares sphere of the true head surface (posed), joint space over the lunate surface.
        surface = head_surface_points(spec_f) - center
        fit_c, fit_r = fit_sphere(surface @ pose_rot.T + center)
        u = sphere_directions(4000)
        lunate = (u @ spec_a.axis <= spec_a.rim_k) & (
            u @ spec_a.fossa_dir < np.cos(np.radians(spec_a.fossa_half_angle_deg)))
        gaps = spec_a.socket.gap(u[lunate, 0], u[lunate, 1], u[lunate, 2])
        socket_pts = center + u[lunate] * (posed_head.radius_along_unit(*u[lunate].T) + gaps)[:, None]
        socket_c, socket_r = fit_sphere(socket_pts)
        ce = _centre_edge_angle(hip, center, sign, spec_a.rim_radius)
        shaft_ras = pose_rot @ spec_f.shaft_dir
        sides[name] = Side(name=name, sign=sign, head_center=fit_c, head_radius=fit_r, head_shape=spec_f.head,
                           joint_space_mm=float(gaps.mean()), socket_radius=socket_r,
                           inclination_deg=spec_a.inclination_deg, anteversion_deg=spec_a.anteversion_deg,
                           cup_axis=spec_a.axis, neck_shaft_deg=spec_f.neck_shaft_deg,
                           neck_junction=pose_rot @ (spec_f.junction - center) + center, shaft_dir=shaft_ras)
        info_sides[name] = {
            "oa_grade": oa, "implant": has_implant,
            "joint_space_min_mm": float(gaps.min()), "joint_space_mean_mm": float(gaps.mean()),
            "acetabulum_center_mm": socket_c, "center_edge_angle_deg": ce, "center_edge_target_deg": ce_target,
            "dysplastic": bool(dysplastic), "flexion_deg": float(flex), "abduction_deg": float(abduction),
            "rotation_deg": float(rotation_deg), "femoral_anteversion_deg": float(spec_f.anteversion_deg),
            "head_flattening_mm": float(spec_f.head.flat_mm), "osteophyte_mm": float(spec_f.osteophyte_mm),
            "acetabular_osteophyte_mm": float(spec_a.osteophyte_mm),
            "cysts": len(spec_f.cysts) + len(spec_a.cysts), "sclerosis_hu": float(spec_f.sclerosis_hu),
            "fovea_depth_mm": float(spec_f.fovea_depth), "medial_wall_mm": float(spec_a.medial_wall_mm),
            "fossa_depth_mm": float(spec_a.fossa_depth_mm), "cortex_head_mm": float(spec_f.cortex_head_mm),
            "cortex_shaft_mm": float(spec_f.cortex_shaft_mm), "designed_center_mm": center,
            "designed_radius_mm": r, "pose_rotation": pose_rot,
            "femur_spec": spec_f, "acetabulum_spec": spec_a,
        }
    sacrum, discs = build_sacrum_l5(rng, scale=scale, si_planes=si_sacrum, texture=texture, hu=hu, bvtv=bvtv * 1.1)
    bones.append(sacrum)
    joint_tissue += discs
    joint_tissue.append(("fibrocartilage", Ellipsoid((0.0, 50.0 * scale, -40.0 * scale),
                                                     (symphysis_gap / 2 + 1.0, 8.0, 17.0)), None))
    organs = _soft_tissue(rng, sides, scale, contrast)
    thighs = {name: (info_sides[name]["designed_center_mm"], sides[name].shaft_dir) for name in sides}
    anatomy = Anatomy(sides=sides, bones=bones, implant=implant_objs[0] if implant_objs else None,
                      body_radii=(rng.uniform(165.0, 200.0) * scale, rng.uniform(118.0, 140.0) * scale),
                      fat_mm=float(rng.uniform(10.0, 40.0)), organs=organs, joint_tissue=joint_tissue,
                      extra_implants=implant_objs[1:], continuous=True, thighs=thighs)
    info = {"sides": info_sides, "osteoporotic": osteoporotic, "implant_sides": list(implants),
            "cancellous_target_hu": float(target), "bone_volume_fraction": float(bvtv),
            "contrast": contrast, "sacroiliac_gap_mm": float(si_gap), "symphysis_gap_mm": float(symphysis_gap),
            "pelvis_scale": float(scale), "hu": hu}
    return anatomy, info

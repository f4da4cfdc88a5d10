"""The anatomic phantom: truth by label schema v1, anatomy from adult facts, bone HU, fields of view."""

import numpy as np
import pytest
from scipy import ndimage

from thagpu import labels as schema
from thagpu.geometry import Orientation
from thagpu.phantom import MATERIALS, PARTS, PRESETS, _rotation, make_phantom
from thagpu.phantom.anatomic import AnatomicOptions, _bone_sdf, fit_sphere, sample_anatomic
from thagpu.phantom.femur import head_surface_points

ANATOMIC = [name for name in PRESETS if name.startswith("anatomic")]


def _ras_of_all_voxels(volume):
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in volume.shape], indexing="ij"), axis=-1)
    return volume.index_to_ras(idx.reshape(-1, 3)).reshape(volume.shape + (3,))


def _expected_labels(case):
    """Every label recomputed from the parts map, the header geometry and gt.json."""
    volume = case.to_volume()
    parts = Orientation.from_geometry(case.geometry).to_canonical(case.parts)
    ras = _ras_of_all_voxels(volume)
    expected = np.zeros(parts.shape, np.uint8)
    expected[(parts > 0) & (parts != PARTS["metal"])] = schema.OTHER_BONE
    for side, (head, cup) in schema.SIDE_LABELS.items():
        if side in case.truth["implant_sides"]:
            continue
        truth = case.truth["sides"][side]
        dist = np.linalg.norm(ras - np.asarray(truth["head_center_mm"]), axis=-1)
        r = truth["head_radius_mm"]
        ambiguous = (np.abs(dist - (r + 2.0)) < 1e-3) | (np.abs(dist - 1.5 * r) < 1e-3)
        expected[(parts == PARTS[f"femur_{side}"]) & (dist <= r + schema.HEAD_MARGIN_MM)] = head
        expected[(parts == PARTS[f"hip_{side}"]) & (dist <= schema.ACETABULUM_RADIUS_FACTOR * r)] = cup
        expected[ambiguous] = case.canonical_labels()[ambiguous]
    return expected


def _ray_runs(bone, start, direction, length=70.0, step=0.02):
    """Intervals (mm from ``start``) along a ray that lie inside ``bone``."""
    t = np.arange(0.0, length, step)
    inside = _bone_sdf(bone, np.asarray(start) + t[:, None] * np.asarray(direction)) < 0
    edges = np.flatnonzero(np.diff(inside.astype(int))) + 1
    bounds = ([0] if inside[0] else []) + list(edges) + ([len(t) - 1] if inside[-1] else [])
    return [(t[a], t[b]) for a, b in zip(bounds[::2], bounds[1::2])]


def _patient(seed, **options):
    anatomy, info = sample_anatomic(np.random.default_rng(seed), AnatomicOptions(**options))
    bones = {bone.name: bone for bone in anatomy.bones}
    return anatomy, info, bones


@pytest.mark.parametrize("preset,seed", [("anatomic", 1), ("anatomic_implant", 2), ("anatomic_truncated", 3),
                                         ("anatomic_oa", 4)])
def test_labels_obey_the_schema_exactly(preset, seed):
    case = make_phantom(seed, size="tiny", preset=preset)
    np.testing.assert_array_equal(case.canonical_labels(), _expected_labels(case))
    counts = np.bincount(case.labels.ravel(), minlength=6)
    for value, name in schema.LABEL_NAMES.items():
        assert case.truth["label_voxels"][name] == counts[value]
    for side, (head, cup) in schema.SIDE_LABELS.items():
        truth = case.truth["sides"][side]
        if truth["status"] == "implant":
            assert not np.any(np.isin(case.labels, [head, cup]))
        elif truth["status"] == "ok":
            assert (case.labels == head).sum() > 20 and (case.labels == cup).sum() > 20


def test_every_anatomic_preset_renders_deterministically_with_both_sides():
    assert set(ANATOMIC) >= {"anatomic", "anatomic_oa", "anatomic_osteoporotic", "anatomic_implant",
                             "anatomic_truncated"}
    for preset in ANATOMIC:
        case = make_phantom(70, size="tiny", preset=preset)
        assert set(case.truth["sides"]) == {"left", "right"} and case.truth["model"] == "anatomic"
        assert case.ct.dtype == np.int16
    a, b = make_phantom(71, size="tiny"), make_phantom(71, size="tiny")
    np.testing.assert_array_equal(a.ct, b.ct)
    assert a.truth == b.truth and a.truth["preset"] == "anatomic"


def test_head_centre_and_radius_are_the_least_squares_sphere_of_the_head_surface():
    _, info, _ = _patient(5, oa_weights=(0, 0, 0, 1))  # flattened, aspherical heads
    anatomy, _, _ = _patient(5, oa_weights=(0, 0, 0, 1))
    for side in ("left", "right"):
        spec, extra = info["sides"][side]["femur_spec"], info["sides"][side]
        rotation, pivot = extra["pose_rotation"], extra["designed_center_mm"]
        surface = (head_surface_points(spec) - pivot) @ rotation.T + pivot
        centre, radius = fit_sphere(surface)
        np.testing.assert_allclose(anatomy.sides[side].head_center, centre, atol=1e-6)
        assert anatomy.sides[side].head_radius == pytest.approx(radius, abs=1e-6)
        assert 20.0 <= radius <= 28.0
        residual = np.abs(np.linalg.norm(surface - centre, axis=1) - radius)
        assert residual.max() < 4.0  # severe OA flattening, yet near-spherical


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_acetabulum_is_a_cavity_in_solid_bone(seed):
    """Roof >= 10 mm thick, thin medial wall (2-6 mm) behind a fossa deeper than the lunate surface."""
    _, info, bones = _patient(seed)
    for side in ("left", "right"):
        extra = info["sides"][side]
        spec = extra["acetabulum_spec"]
        hip = bones[f"hip_{side}"]
        centre = spec.center
        roof = _ray_runs(hip, centre, [0.0, 0.0, 1.0])
        assert roof[0][1] - roof[0][0] >= 10.0
        # Along the fossa axis: the socket floor is the fossa, deeper than the lunate surface, then the wall.
        wall = _ray_runs(hip, centre, spec.fossa_dir)
        floor, outer = wall[0]
        lunate_r = spec.socket.head.radius_along_unit(*spec.fossa_dir) + spec.socket.gap(*spec.fossa_dir)
        assert floor - lunate_r == pytest.approx(spec.fossa_depth_mm, abs=0.2)
        assert 2.0 <= outer - floor <= 6.0
        assert outer - floor == pytest.approx(spec.medial_wall_mm, abs=0.5)
        # Posterior column: bone behind the joint.
        back = _ray_runs(hip, centre, [0.0, -1.0, 0.0])
        assert back[0][1] - back[0][0] >= 10.0
        # The acetabular notch: no bone on the rim below the fossa.
        notch_rim = centre + spec.notch_dir * (spec.rim_radius + 1.0)
        assert _bone_sdf(hip, notch_rim[None])[0] > 0


def test_fossa_has_fat_and_no_cartilage_and_the_lunate_surface_has_cartilage():
    anatomy, info, _ = _patient(1)
    spec = info["sides"]["left"]["acetabulum_spec"]
    tissue = [(name, shape) for name, shape, pose in anatomy.joint_tissue if pose is None]
    lunate = [shape for name, shape in tissue if name == "cartilage"][0]
    fat = [shape for name, shape in tissue if name == "fat"][0]
    r = spec.socket.head.radius_along_unit(*spec.fossa_dir) + spec.socket.gap(*spec.fossa_dir)
    in_fossa = spec.center + spec.fossa_dir * (r + 0.5 * spec.fossa_depth_mm)
    assert lunate.sdf(*in_fossa[:, None])[0] > 0 and fat.sdf(*in_fossa[:, None])[0] < 0
    # Straight up (the roof, outside the fossa cone), just inside the socket surface: cartilage.
    up = np.array([0.0, 0.0, 1.0])
    r_up = spec.socket.head.radius_along_unit(*up) + spec.socket.gap(*up)
    assert lunate.sdf(*(spec.center + up * (r_up - 0.3))[:, None])[0] < 0


def test_osteoarthritis_closes_the_joint_space_superolaterally():
    for seed in range(4):
        _, info, _ = _patient(seed, oa_weights=(0, 0, 0, 1))
        for side in ("left", "right"):
            extra = info["sides"][side]
            socket = extra["acetabulum_spec"].socket
            assert extra["oa_grade"] == 3 and extra["joint_space_min_mm"] <= 1.0
            load = np.asarray(socket.narrow_dir)
            medial = np.array([-1.0 if side == "right" else 1.0, 0.0, 0.0])
            assert socket.gap(*load) == pytest.approx(socket.min_mm)
            assert socket.gap(*medial) > socket.gap(*load) + 1.0
            assert extra["osteophyte_mm"] > 0 and extra["head_flattening_mm"] > 0


def test_flexion_moves_the_femur_and_keeps_the_head_in_the_socket():
    flexed = None
    for seed in range(40):
        anatomy, info, bones = _patient(seed)
        if info["sides"]["left"]["flexion_deg"] > 25:
            flexed = anatomy, info, bones
            break
    assert flexed is not None
    anatomy, info, bones = flexed
    extra = info["sides"]["left"]
    shaft = anatomy.sides["left"].shaft_dir
    # The shaft now points forward (anterior, +y) by about the flexion angle.
    assert np.degrees(np.arcsin(shaft[1])) == pytest.approx(extra["flexion_deg"], abs=8.0)
    # The femur turns about the head centre: the head stays where the socket was built around it.
    centre = np.asarray(anatomy.sides["left"].head_center)
    assert np.linalg.norm(centre - extra["designed_center_mm"]) < 0.5
    assert np.linalg.norm(centre - extra["acetabulum_center_mm"]) < 3.0  # a lunate-surface fit; OA narrows it
    # No point of the posed head surface lies inside the hip bone.
    spec = extra["femur_spec"]
    rotation, pivot = extra["pose_rotation"], extra["designed_center_mm"]
    surface = (head_surface_points(spec, 800) - pivot) @ rotation.T + pivot
    assert (_bone_sdf(bones["hip_left"], surface) > -0.05).all()


@pytest.mark.parametrize("preset,low,high", [("anatomic", 150.0, 500.0), ("anatomic_osteoporotic", 40.0, 150.0)])
def test_cancellous_hu_at_1mm(preset, low, high):
    seed = 3 if preset == "anatomic" else 0
    probe = make_phantom(seed, size="tiny", preset=preset, header="RAS")
    assert probe.truth["bone_quality"] == ("normal" if preset == "anatomic" else "osteoporotic")
    centre = probe.truth["sides"]["left"]["head_center_mm"]
    case = make_phantom(seed, size="small", preset=preset, header="RAS", spacing=(1.0, 1.0, 1.0),
                        fov_mm=(80.0, 80.0, 80.0), fov_center_mm=centre)
    inner = ndimage.binary_erosion(case.materials == MATERIALS["cancellous"])
    values = case.ct[inner & np.isin(case.parts, [PARTS["femur_left"], PARTS["hip_left"]])]
    assert low <= np.median(values) <= high
    assert values.std() > 25.0  # trabecular texture, not flat bone


def _cortex_runs(materials, parts, part, start, direction, spacing, length):
    """Lengths (mm) of cortical runs of ``part`` along a ray sampled at voxel centres."""
    t = np.arange(0.0, length, 0.1)
    idx = np.round((np.asarray(start) + t[:, None] * direction) / spacing).astype(int)
    ok = np.all((idx >= 0) & (idx < materials.shape), axis=1)
    idx = idx[ok]
    cortical = (materials[tuple(idx.T)] == MATERIALS["cortical"]) & (parts[tuple(idx.T)] == part)
    edges = np.flatnonzero(np.diff(cortical.astype(int))) + 1
    bounds = ([0] if cortical[0] else []) + list(edges) + ([len(cortical) - 1] if cortical[-1] else [])
    return [(b - a) * 0.1 for a, b in zip(bounds[::2], bounds[1::2])]


def test_cortex_is_thin_on_the_head_and_thick_on_the_shaft():
    seed, spacing = 3, 0.4
    probe = make_phantom(seed, size="tiny", preset="anatomic", header="RAS")
    truth = probe.truth["sides"]["left"]
    centre = np.asarray(truth["head_center_mm"])
    # A box holding the rays below (up, forward, back, lateral-up from the centre of the left head).
    fov, fov_centre = np.array([34.0, 64.0, 34.0]), centre + np.array([-15.0, 0.0, 15.0])
    case = make_phantom(seed, size="small", preset="anatomic", header="RAS", spacing=(spacing,) * 3,
                        fov_mm=fov, fov_center_mm=fov_centre)
    origin = fov_centre - (np.asarray(case.materials.shape) - 1) / 2 * spacing
    assert 0.5 <= truth["cortex_head_mm"] <= 1.5
    head_runs = []
    for direction in ([0, 0, 1.0], [0, 1.0, 0], [0, -1.0, 0], [-1.0, 0, 0.3]):
        u = np.asarray(direction) / np.linalg.norm(direction)
        runs = _cortex_runs(case.materials, case.parts, PARTS["femur_left"], centre - origin, u, spacing, 31.0)
        head_runs.append(runs[-1])
    assert 0.3 <= np.median(head_runs) <= 1.8
    # The shaft, 10 cm below the neck: an axial ring of cortex 3-8 mm around the marrow canal.
    assert 3.0 <= truth["cortex_shaft_mm"] <= 8.0
    anatomy, _ = sample_anatomic(np.random.default_rng(seed), PRESETS["anatomic"].anatomic)
    side = anatomy.sides["left"]
    shaft_anat = side.neck_junction + 5.0 * side.head_radius * side.shaft_dir
    ax, ay, az = probe.truth["pose"]["rotation_deg_xyz"]
    rotation = _rotation(2, az) @ _rotation(1, ay) @ _rotation(0, ax)
    shaft = rotation @ shaft_anat + np.asarray(probe.truth["pose"]["translation_mm"])
    shaft_probe = make_phantom(seed, size="small", preset="anatomic", header="RAS", spacing=(0.5,) * 3,
                               fov_mm=(60.0, 60.0, 4.0), fov_center_mm=shaft)
    mid = shaft_probe.materials[:, :, shaft_probe.materials.shape[2] // 2]
    parts = shaft_probe.parts[:, :, shaft_probe.parts.shape[2] // 2]
    assert (mid == MATERIALS["marrow"]).sum() > 50
    cortex = (mid == MATERIALS["cortical"]) & (parts == PARTS["femur_left"])
    canal = ndimage.binary_fill_holes(cortex) & ~cortex
    thickness = 2 * ndimage.distance_transform_edt(ndimage.binary_fill_holes(cortex) & ~canal)
    ring = thickness[cortex].max() * 0.5
    assert 3.0 <= ring <= 8.5


def test_one_hip_field_of_view_holds_one_head_only():
    case = make_phantom(81, size="tiny", preset="anatomic_truncated", truncate_side="left", truncate_mode="one_hip")
    assert case.truth["truncation"]["mode"] == "one_hip"
    assert case.truth["sides"]["left"]["head_visible_fraction"] == 1.0
    assert case.truth["sides"]["left"]["status"] == "ok"
    assert case.truth["sides"]["right"]["head_visible_fraction"] == 0.0
    assert case.truth["sides"]["right"]["status"] == "truncated"
    assert not np.any(case.labels == schema.FEMORAL_HEAD_RIGHT)
    assert np.any(case.labels == schema.FEMORAL_HEAD_LEFT)


def test_cut_field_of_view_cuts_through_a_head():
    case = make_phantom(82, size="tiny", preset="anatomic_truncated", truncate_side="right", truncate_mode="cut")
    right = case.truth["sides"]["right"]
    assert right["status"] == "truncated" and 0.2 < right["head_visible_fraction"] < 1.0


def test_implants_on_both_sides_with_screws_and_no_hip_labels():
    case = make_phantom(90, size="tiny", preset="anatomic_implant", implant_side="both")
    assert case.truth["implant_sides"] == ["left", "right"] and case.truth["implant_side"] == "both"
    assert not np.any(np.isin(case.labels, [1, 2, 3, 4]))
    assert (case.ct > 2500).sum() > 40
    assert all(case.truth["sides"][s]["status"] == "implant" for s in ("left", "right"))


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.8, 0.8, 3.0), (3.0, 3.0, 3.0)])
def test_acquisition_spacings(spacing):
    case = make_phantom(5, size="small", preset="anatomic", spacing=spacing, fov_mm=(120.0, 100.0, 60.0))
    assert sorted(case.geometry.spacing) == sorted(spacing)
    np.testing.assert_array_equal(case.canonical_labels(), _expected_labels(case))


def test_cli_knows_the_presets_and_the_default():
    from thagpu import cli, phantom
    assert set(cli.PRESETS) == set(phantom.PRESETS)
    assert cli.DEFAULT_PRESET == phantom.DEFAULT_PRESET == "anatomic"


def test_truth_is_plain_json_and_written(tmp_path):
    import json
    from thagpu.phantom import write_phantom
    for preset, seed in (("anatomic_truncated", 83), ("anatomic_implant", 84)):
        case = make_phantom(seed, size="tiny", preset=preset)
        paths = write_phantom(case, tmp_path)
        truth = json.loads(paths["truth"].read_text(encoding="utf-8"))
        assert truth == json.loads(json.dumps(case.truth))
        for side in truth["sides"].values():
            assert side["joint_space_min_mm"] <= side["joint_space_mean_mm"] == side["joint_space_mm"]
            assert side["bone_quality"] in ("normal", "osteoporotic") and side["oa_grade"] in (0, 1, 2, 3)


def test_bone_fraction_is_the_voxels_share_of_bone_and_changes_nothing_else():
    """A voxel wholly inside bone has fraction 1 and a bone label; one wholly outside, 0 and none;
    a voxel's centre lies in bone about when most of it is bone. The CT is the same with or without."""
    kwargs = dict(size="small", preset="anatomic", spacing=(3.0, 3.0, 3.0), fov_mm=(120.0, 100.0, 60.0))
    plain, case = make_phantom(5, **kwargs), make_phantom(5, bone_fraction=True, **kwargs)
    assert plain.bone_fraction is None
    np.testing.assert_array_equal(plain.ct, case.ct)
    fraction, bone = case.bone_fraction, (case.parts > 0) & (case.parts != PARTS["metal"])
    assert fraction.shape == case.ct.shape and fraction.dtype == np.float32
    assert fraction.min() >= 0.0 and fraction.max() <= 1.0
    assert bone[fraction == 1.0].all() and not bone[fraction == 0.0].any()
    partial = (fraction > 0) & (fraction < 1)
    assert partial.sum() > 1000  # 3 mm voxels: every surface is partial volume
    agree = np.mean((fraction[partial] >= 0.5) == bone[partial])
    assert agree > 0.8


def test_sharp_kernel_overshoots_at_the_cortex_and_is_noisier():
    """The same patient reconstructed with a bone kernel: the cortex reads brighter (the overshoot on
    the bright side of its edges), soft tissue next to it darker, and the noise is that of the preset."""
    cases = {}
    for preset in ("anatomic", "anatomic_sharp_kernel"):
        probe = make_phantom(5, size="tiny", preset=preset, header="RAS")
        centre = probe.truth["sides"]["left"]["head_center_mm"]
        cases[preset] = make_phantom(5, size="small", preset=preset, header="RAS", spacing=(1.0, 1.0, 1.0),
                                     fov_mm=(90.0, 90.0, 60.0), fov_center_mm=centre)
    standard, sharp = cases["anatomic"], cases["anatomic_sharp_kernel"]
    np.testing.assert_array_equal(standard.materials, sharp.materials)  # the same patient and pose
    assert standard.truth["reconstruction"]["kernel"] == "standard" and sharp.truth["reconstruction"]["kernel"] == "sharp"
    assert 50.0 <= sharp.truth["noise_hu"] <= 110.0
    # The noise as rendered: the SD of muscle at least 3 voxels from any other material.
    muscle = ndimage.binary_erosion(sharp.materials == MATERIALS["muscle"], iterations=3)
    assert muscle.sum() > 2000
    assert sharp.ct[muscle].std() > 1.5 * standard.ct[muscle].std()
    assert sharp.ct[muscle].std() == pytest.approx(sharp.truth["noise_hu"], rel=0.35)
    cortex = (sharp.materials == MATERIALS["cortical"]) & (sharp.parts > 0)
    near = ndimage.binary_dilation(cortex, iterations=1) & np.isin(sharp.materials, [MATERIALS["muscle"], MATERIALS["fat"]])

    def mean(case, where):
        return float(case.ct[where].astype(np.float64).mean())

    assert mean(sharp, cortex) > mean(standard, cortex) + 50.0
    assert mean(sharp, near) < mean(standard, near) - 20.0

"""One typed configuration for every stage, with documented defaults.

A TOML or YAML file overrides any subset::

    [io]
    max_voxels = 2e9

Unknown sections or keys are refused (a typo must not be silently ignored).
``config_hash`` identifies a configuration in every output it produced.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .errors import InputError

#: The segmentation networks thagpu builds (:func:`thagpu.aar.networks.make_network`): convolutional,
#: attention-gated and transformer-based.
NETWORK_NAMES = ("unet", "attention_unet", "segresnet", "dynunet", "unetr", "swinunetr")

__all__ = ["IOConfig", "BoneConfig", "AFSConfig", "AARConfig", "Config", "load_config", "config_hash"]


@dataclass(frozen=True)
class IOConfig:
    """Reading CT files."""

    #: Refuse images with more voxels than this before reading any pixel.
    max_voxels: float = 1.5e9


@dataclass(frozen=True)
class BoneConfig:
    """Bone extraction (graph cut); see docs/bone_extraction.md for the energy."""

    #: Neighbourhood of the pairwise terms: 6, 18 or 26.
    connectivity: int = 6
    #: Bone seeds: voxels inside the body at or above this HU (and below ``metal_hu``).
    #: None: ``seed_fraction`` of the way from the volume's soft-tissue level to its cortical
    #: level (both estimated per volume), and at least 6 noise SDs above soft tissue.
    cortical_seed_hu: Optional[float] = None
    seed_fraction: float = 0.6
    #: Bone shells that, closed and filled, give the confident bone samples: this fraction of the
    #: way from soft tissue to cortex (lower than the seeds: a thin blurred cortex must count).
    shell_fraction: float = 0.35
    #: Extra background cost (nats) inside those filled shells, eroded by one voxel.
    interior_prior: float = 4.0
    #: Cancellous bone whose thin cortex does not close (vertebral bodies, femoral heads at 3 mm)
    #: counts as a bone shell too: the image smoothed by ``cancellous_smooth_mm`` (trabeculae and
    #: noise average out) at or above the soft-tissue level plus max(``cancellous_margin_hu``,
    #: ``cancellous_noise_sd`` noise SDs of the smoothed image), where it hangs together with the
    #: bright shells (thagpu/bone/seeds.py: cancellous_region). 0 disables.
    cancellous_margin_hu: float = 60.0
    cancellous_noise_sd: float = 4.0
    cancellous_smooth_mm: float = 1.5
    #: Valleys between two bright plates within this reach (mm) whose bottom is nearer soft tissue
    #: than the plates (resolved joint spaces) are never cancellous bone.
    valley_reach_mm: float = 3.0
    #: Where the intensity costs are neutral (between clear soft tissue and clear bone), a unary
    #: preference of up to this many nats for the side of the local half-maximum: a voxel above
    #: half-way between the darkest and brightest CT within ``half_max_radius_mm`` leans to bone,
    #: below it to background (thagpu/bone/halfmax.py), where the two differ by at least
    #: ``half_max_min_span_hu`` (and 6 noise SDs). Thin bones seen only in partial volume keep
    #: their extent. 0 disables.
    half_max_weight: float = 1.0
    #: Where between the darkest (0) and brightest (1) CT around it a bone surface lies. 0.5 (the
    #: half maximum) holds for a step between thick layers; a cortex thinner than the blur peaks
    #: below its true density, so its surface lies higher up its blurred edge. "auto" (or None): from a cortex
    #: of ``half_max_cortex_mm`` under the blur of the scanner's PSF (``half_max_psf_mm``) and the
    #: voxel (thagpu/bone/halfmax.py: thin_cortex_level; 0.62 at 1 mm voxels, 0.81 at 3 mm). On the
    #: anatomic phantoms the plain half maximum put the first voxel layer outside the bone into
    #: the mask on 28 % of the surface at 1 mm. With a level above 0.5, voxels below it that the
    #: intensity model alone would call bone (between ``bone_min`` and the cortical seed level) are
    #: left to the tilt too: they are the partial-volume rim of a bright cortex. The default stays 0.5: the
    #: automatic level raised bone Dice on 52 of 55 anatomic phantoms but cut the vertebral bodies
    #: of the real abdominal DICOM in shared/data to 75 % of their >200 HU voxels (from >= 90 %).
    half_max_level: float | str | None = 0.5
    #: Cortical thickness (mm) assumed by the automatic level: 1-3 mm around the hip (the
    #: acetabular roof, the femoral neck and head; thicker only in the femoral shaft).
    half_max_cortex_mm: float = 2.0
    half_max_psf_mm: float = 0.6
    half_max_radius_mm: float = 2.0
    half_max_min_span_hu: float = 150.0
    #: Bone cost (nats) on thin dark sheets between two bright plates (a joint space narrower than
    #: about ``sheet_reach_mm``; see thagpu/bone/sheets.py), where the interior prior is also
    #: taken off. 0 disables.
    sheet_cost: float = 2.0
    sheet_reach_mm: float = 2.0
    #: Unary costs (nats): clearly soft tissue up to soft level + ``soft_sd`` noise SDs, clearly
    #: bone from ``bone_fraction`` of the way to the cortical level; neutral between.
    unary_weight: float = 2.0
    soft_sd: float = 3.0
    bone_fraction: float = 0.45
    #: Voxels at or below this HU (air, gas, most fat) are background seeds.
    background_seed_hu: float = -200.0
    #: Metal (implants) is background, never bone.
    metal_hu: float = 2500.0
    #: The body: thick, large regions above this HU (trunk, arms, not the table); outside it
    #: everything is background.
    body_threshold_hu: float = -400.0
    #: Boundary term exp(-dI^2 / 2 sigma^2): HU difference at which cutting gets cheap.
    #: None: ``sigma_fraction`` x (cortical level - soft-tissue level) of the volume.
    sigma_hu: Optional[float] = None
    sigma_fraction: float = 0.3
    #: Weight of the boundary term: a voxel's links sum to 6 x this in flat regions (any grid).
    pairwise_weight: float = 0.3
    #: "exact": max-flow on every voxel the exact reduction leaves free; "banded": solve on a
    #: coarse grid first and only in a band around its boundary at full resolution (faster,
    #: not guaranteed minimal; the benchmark reports the energy gap).
    mode: str = "exact"
    #: Banded mode: downsampling factor of the coarse solve and half-width of the band.
    coarse_factor: int = 2
    band_mm: float = 3.0
    #: Coarse-to-fine BE: along axes finer than this (mm; 0: never), BE runs on 2-voxel block means
    #: and only the voxels within a fine voxel of its surface are decided again at full resolution
    #: (thagpu/bone/refine.py): 0.8 x 0.8 x 3 mm solves at 1.6 x 1.6 x 3 mm, 0.65 x 0.65 x 0.8 mm at
    #: 1.3 x 1.3 x 1.6 mm, in a quarter to a fifth of the time, at equal or better bone Dice on the
    #: dev phantoms (docs/bone_extraction.md).
    coarse_below_mm: float = 0.85
    #: Upper bound on reduction passes (exactness does not depend on it).
    max_passes: int = 2
    #: Fill cavities enclosed by bone (marrow, low-density cancellous bone) ...
    fill_cavities: bool = True
    #: ... closing gaps in the cortex of up to about twice this first (0: no closing).
    fill_closing_mm: float = 4.0
    #: ... and holes within one axial slice up to this area (mm^2; 0: 3-D cavities only). The iliac body
    #: above the acetabulum and the sacrum at S1 reach 30-45 cm^2 in a slice, a femoral head 20 cm^2; the
    #: true pelvis, the largest cavity bone can ring in a slice, is 70 cm^2 or more.
    max_slice_hole_mm2: float = 5000.0
    #: Last, the slice holes of the filled mask closed by this half-width (mm; 0: none), the closing
    #: never crossing a joint space the energy found (its dark sheets and valleys): a faint cortex
    #: broken into a ring with gaps, around cancellous bone broken into blobs (osteoporotic bone
    #: through a sharp kernel), still rings in its marrow (thagpu/bone/cleanup.py: closed_interior;
    #: only where an axis is 2 mm or coarser, which blurs a thin cortex into gaps) ...
    interior_closing_mm: float = 2.0
    #: ... where at least this share of a region's border in its slice is the mask itself (what the
    #: closing adds in a concavity of a bone, or between two bones, faces the tissue along its mouth).
    interior_wall_share: float = 0.8
    #: Take off the outer voxels on the soft side of a resolved cortex's half maximum (the
    #: partial-volume rim the cut keeps outside a bright cortex; thagpu/bone/cleanup.py:
    #: trim_resolved_rim), telling the outside of the bone from gaps in its cortex by a box closing
    #: of this half-width in mm, rounded to whole voxels per axis and at least one (0: no trim).
    rim_closing_mm: float = 1.5
    #: Components smaller than this are dropped.
    min_island_ml: float = 0.2
    #: Components at least this large form the skeleton ...
    skeleton_min_ml: float = 1.0
    #: ... and smaller ones farther than this from it are dropped (calcifications).
    max_gap_mm: float = 25.0

    def __post_init__(self):
        if self.connectivity not in (6, 18, 26):
            raise ValueError(f"bone.connectivity must be 6, 18 or 26, not {self.connectivity}")
        if self.mode not in ("exact", "banded"):
            raise ValueError(f"bone.mode must be 'exact' or 'banded', not {self.mode!r}")
        if self.sheet_cost < 0 or self.sheet_reach_mm <= 0:
            raise ValueError("bone.sheet_cost must be >= 0 and bone.sheet_reach_mm > 0")
        if not self.interior_closing_mm >= 0 or not 0.0 <= self.interior_wall_share <= 1.0:  # NaN too
            raise ValueError("bone.interior_closing_mm must be >= 0 and bone.interior_wall_share in [0, 1]")
        if (self.sigma_hu is not None and self.sigma_hu <= 0) or self.pairwise_weight < 0:
            raise ValueError("bone.sigma_hu must be > 0 and bone.pairwise_weight >= 0")
        if not 0.0 < self.seed_fraction < 1.0:
            raise ValueError("bone.seed_fraction must be between 0 and 1")
        if self.half_max_level not in (None, "auto") and not 0.0 < float(self.half_max_level) < 1.0:
            raise ValueError(f"bone.half_max_level must be between 0 and 1, not {self.half_max_level}")
        if self.half_max_cortex_mm <= 0 or self.half_max_psf_mm <= 0:
            raise ValueError("bone.half_max_cortex_mm and bone.half_max_psf_mm must be > 0")
        if not 0 <= self.coarse_below_mm < 10:  # NaN too
            raise ValueError(f"bone.coarse_below_mm must be >= 0 and below 10, not {self.coarse_below_mm}")
        if not self.rim_closing_mm >= 0:  # NaN too
            raise ValueError(f"bone.rim_closing_mm must be >= 0, not {self.rim_closing_mm}")


@dataclass(frozen=True)
class AFSConfig:
    """Acetabulum and femoral head segmentation; see docs/afs.md for each step."""

    #: Candidate femoral head radii searched by the sphere voting (mm).
    min_radius_mm: float = 18.0
    max_radius_mm: float = 30.0
    #: Grid spacing of the sphere voting (mm); the volume is block-averaged to about this.
    vote_spacing_mm: float = 2.0
    #: Number of radial lines from each head candidate (a Fibonacci sphere).
    n_directions: int = 400
    #: Radial sample step along each line (mm).
    profile_step_mm: float = 0.25
    #: Gaussian smoothing of each profile before differentiation (mm).
    profile_sigma_mm: float = 0.5
    #: Metal: voxels at or above this HU; a side with more than ``implant_min_ml`` of it near the head is an implant.
    metal_hu: float = 2500.0
    implant_min_ml: float = 2.0
    #: Boundary points farther than this from the fitted sphere are outliers (Tukey's biweight scale, mm).
    fit_outlier_mm: float = 2.0
    #: A head needs at least this fraction of its lines on the fitted sphere (else ``not_found``).
    min_inlier_fraction: float = 0.3
    #: Largest sphere-fit RMS of a head (mm) before it is ``not_found``.
    max_fit_rms_mm: float = 1.0
    #: A head whose surface departs from its sphere by more than this RMS (mm) is ``low_confidence``: a
    #: deformed head, or a sphere between head and socket where the two were not seen apart.
    ok_max_fit_rms_mm: float = 0.8
    #: Below this joint space (mm) femur and pelvis may touch: the side is ``low_confidence``.
    min_joint_space_mm: float = 0.5
    #: Confidence below this makes an otherwise fitted side ``low_confidence``.
    min_confidence: float = 0.5
    #: The head's radius from a blurred thin-cortex model along its lines (docs/afs.md, step 4b):
    #: the scanner's in-plane point-spread sigma (mm; standard kernels 0.4-0.7) and the slice
    #: sensitivity profile's sigma as a fraction of the slice spacing (0.42: FWHM = the slice).
    cortex_edge_model: bool = True
    psf_sigma_mm: float = 0.55
    slice_profile_fraction: float = 0.42

    def __post_init__(self):
        if not 0 < self.min_radius_mm < self.max_radius_mm:
            raise ValueError("afs.min_radius_mm must be > 0 and below afs.max_radius_mm")
        if self.n_directions < 50:
            raise ValueError("afs.n_directions must be at least 50")
        if self.profile_step_mm <= 0 or self.vote_spacing_mm <= 0 or self.profile_sigma_mm < 0:
            raise ValueError("afs.profile_step_mm and afs.vote_spacing_mm must be > 0, afs.profile_sigma_mm >= 0")
        if not 0.0 < self.min_inlier_fraction < 1.0:
            raise ValueError("afs.min_inlier_fraction must be between 0 and 1")
        if self.psf_sigma_mm < 0 or self.slice_profile_fraction < 0:
            raise ValueError("afs.psf_sigma_mm and afs.slice_profile_fraction must be >= 0")


@dataclass(frozen=True)
class AARConfig:
    """Active-learning annotation refinement: networks on the hip region; see docs/aar.md."""

    #: Network: "dynunet", "segresnet" or "unet" (MONAI); the model benchmark also trains
    #: "attention_unet", "unetr" and "swinunetr" through this section.
    model: str = "dynunet"
    #: Channels of the first level (doubled at each level down).
    width: int = 16
    #: The hip region is resampled to this isotropic spacing (mm) ...
    spacing_mm: float = 2.0
    #: ... in a box of this size (mm, patient left-right, anterior-posterior, inferior-superior)
    #: around the centroid of the hip labels.
    roi_lr_mm: float = 240.0
    roi_ap_mm: float = 160.0
    roi_si_mm: float = 160.0
    #: Cubic training patch and sliding-window size (voxels of the resampled grid).
    patch_size: int = 64
    #: Folds, epochs (one epoch: ``samples_per_case`` patches of every training case), batch.
    folds: int = 5
    epochs: int = 50
    samples_per_case: int = 2
    batch_size: int = 2
    learning_rate: float = 1e-3
    #: Training crops: 0 centres them on labelled / unlabelled voxels 2:1 (most labelled voxels are
    #: other bone); above 0 on a voxel of each class with weights background 1, each hip class this
    #: weight, other bone 1, so hips are seen often even in whole-volume samples (the CPU preset of
    #: the model benchmark uses it).
    hip_crop_weight: float = 0.0
    #: Mirror half of the training crops across the patient's left-right axis, swapping the left and
    #: right hip labels (:mod:`thagpu.aar.augment`): each side's classes learn from both hips. On in
    #: the model benchmark's presets; off here until the AAR benchmark has been run with it.
    mirror_sides: bool = False
    #: Sliding-window overlap at inference.
    sw_overlap: float = 0.25
    #: Dropout probability in the network's blocks while training (0: none). Above 0, scoring also
    #: measures the Monte-Carlo dropout entropy of each case (the ``epistemic`` strategy) from
    #: ``mc_samples`` forward passes with dropout left on.
    dropout: float = 0.0
    mc_samples: int = 8
    #: Seed of fold assignment, initialisation, sampling and augmentation.
    seed: int = 0
    #: Uncertainty score = mean hip-class (1 - Dice) + ``boundary_weight`` x min(ASSD / ``boundary_mm``, 1)
    #: + ``volume_weight`` x min(disagreeing hip volume / ``volume_ml``, 1).
    boundary_weight: float = 0.5
    boundary_mm: float = 10.0
    volume_weight: float = 0.5
    volume_ml: float = 20.0

    def __post_init__(self):
        if self.model not in NETWORK_NAMES:
            raise ValueError(f"aar.model must be one of {', '.join(NETWORK_NAMES)}, not {self.model!r}")
        if self.folds < 2:
            raise ValueError("aar.folds must be at least 2 (out-of-fold prediction)")
        if self.patch_size < 16 or self.patch_size % 16:
            raise ValueError("aar.patch_size must be a multiple of 16, at least 16")
        if self.epochs < 1 or self.samples_per_case < 1 or self.batch_size < 1 or self.width < 4:
            raise ValueError("aar.epochs, samples_per_case, batch_size must be >= 1 and aar.width >= 4")
        if self.spacing_mm <= 0 or min(self.roi_lr_mm, self.roi_ap_mm, self.roi_si_mm) <= 0:
            raise ValueError("aar.spacing_mm and the aar.roi_*_mm sizes must be > 0")
        if self.hip_crop_weight < 0:
            raise ValueError("aar.hip_crop_weight must be >= 0")
        if not 0.0 <= self.dropout < 1.0 or self.mc_samples < 2:
            raise ValueError("aar.dropout must be in [0, 1) and aar.mc_samples at least 2")


@dataclass(frozen=True)
class Config:
    """Every parameter of the pipeline; sections per stage."""

    io: IOConfig = field(default_factory=IOConfig)
    bone: BoneConfig = field(default_factory=BoneConfig)
    afs: AFSConfig = field(default_factory=AFSConfig)
    aar: AARConfig = field(default_factory=AARConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _merge(cls, values: dict, where: str):
    if not isinstance(values, dict):
        raise ValueError(f"[{where}] must be a table of settings")
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise ValueError(f"unknown setting '{where + '.' if where else ''}{key}' "
                             f"(known: {', '.join(sorted(known))})")
        default = known[key].default_factory() if known[key].default_factory is not dataclasses.MISSING \
            else known[key].default
        if default is None:
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ValueError(f"setting '{where}.{key}' must be a number, got {value!r}")
            kwargs[key] = float(value)
        elif dataclasses.is_dataclass(default):
            kwargs[key] = _merge(type(default), value, f"{where + '.' if where else ''}{key}")
        else:
            if isinstance(default, bool) != isinstance(value, bool) or (
                    isinstance(default, (int, float)) and not isinstance(value, (int, float))):
                raise ValueError(f"setting '{where}.{key}' must be like {default!r}, got {value!r}")
            kwargs[key] = type(default)(value) if isinstance(default, float) else value
    return cls(**kwargs)


def load_config(path=None, overrides: dict | None = None, defaults: dict | None = None) -> Config:
    """Built-in defaults, then ``defaults``, then the TOML/YAML file at ``path``, then ``overrides``.

    ``defaults`` and ``overrides`` are nested dicts (section -> key -> value); ``defaults`` is a
    preset the file may change (as ``thagpu refine simulate --size``), ``overrides`` the command
    line, which the file may not.
    """
    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise InputError(path, "config file not found")
        text = path.read_text(encoding="utf-8")
        try:
            if path.suffix.lower() == ".toml":
                try:
                    import tomllib
                except ModuleNotFoundError:  # Python 3.10
                    import tomli as tomllib
                values = tomllib.loads(text)
            elif path.suffix.lower() in (".yaml", ".yml"):
                import yaml
                values = yaml.safe_load(text) or {}
            else:
                raise InputError(path, "config must be a .toml, .yaml or .yml file")
        except InputError:
            raise
        except Exception as error:  # the parsers' own exception types differ
            raise InputError(path, f"cannot parse config: {str(error).splitlines()[0]}") from None
    for section, settings in (defaults or {}).items():
        if not isinstance(values.get(section, {}), dict):
            continue  # a malformed section: _merge refuses it below
        values[section] = {**settings, **values.get(section, {})}
    for section, settings in (overrides or {}).items():
        values.setdefault(section, {}).update(settings)
    try:
        return _merge(Config, values, "")
    except (ValueError, TypeError) as error:
        raise InputError(path or "config", str(error)) from None


def config_hash(config: Config) -> str:
    """Short stable hash of the pipeline configuration (sha256 of its sorted JSON).

    The ``aar`` section is left out: it trains networks on a built dataset and does
    not change how a case is segmented, so tuning it keeps the dataset's hash.
    """
    values = config.to_dict()
    values.pop("aar", None)
    text = json.dumps(values, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]

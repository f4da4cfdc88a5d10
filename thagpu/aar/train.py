"""K-fold training of MONAI networks on the current labels, and out-of-fold prediction.

Each case becomes one sample: its hip region (:mod:`thagpu.aar.roi`) at the fixed spacing, CT
normalised to [0, 1] and its current label. Fold ``k``'s model trains on the cases of every other
fold (MONAI: positive/negative-balanced random crops, intensity shifts, with ``aar.mirror_sides`` mirrored
patients (:mod:`thagpu.aar.augment`), batch Dice + cross-entropy) and
predicts only the cases of fold ``k`` (sliding window, Gaussian blending), so no case is predicted by a
model that saw its label. On a GPU the forward passes run under bf16 autocast, channels-last.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .. import labels as schema
from .._atomic import atomic_path
from ..config import AARConfig
from ..errors import InputError, describe
from ..io import load_ct, load_labels
from .networks import N_CLASSES, make_network
from .roi import HipROI, hip_roi, normalise_hu, to_roi, whole_roi

__all__ = ["Sample", "sample_from_files", "load_sample", "train_fold", "load_model", "predict", "segment",
           "checkpoint_path"]


@dataclass
class Sample:
    """One case on the network's grid."""

    case_id: str
    image: np.ndarray  # (X, Y, Z) float32 in [0, 1]
    label: np.ndarray  # (X, Y, Z) uint8, current label
    roi: HipROI


def sample_from_files(case_id: str, image_path, label_path, config: AARConfig, region: str = "hip"):
    """(Sample, Volume, canonical label) of a CT and its label map on the fixed grid.

    ``region`` "hip": the hip box of :func:`~thagpu.aar.roi.hip_roi`; "whole": the whole volume.
    """
    volume = load_ct(image_path)
    labels = load_labels(label_path, volume, allowed=schema.LABEL_NAMES)
    roi = (hip_roi(labels, volume.spacing, config) if region == "hip"
           else whole_roi(volume.shape, volume.spacing, config.spacing_mm))
    image = normalise_hu(to_roi(volume.array, roi, order=1, cval=-1000.0))
    label = to_roi(labels, roi, order=0, cval=0).astype(np.uint8)
    return Sample(case_id, image, label, roi), volume, labels


def load_sample(row: dict, label_path: Path, config: AARConfig):
    """(Sample, Volume, canonical label) of a ledger row with the label map at ``label_path``."""
    return sample_from_files(row["case_id"], row["input_path"], label_path, config)


def checkpoint_path(dataset_dir, round_: int, fold: int) -> Path:
    return Path(dataset_dir) / "refine" / f"round_{round_:03d}" / f"fold_{fold}.pt"


def _torch_device(device: str):
    import torch
    return torch.device("cuda" if device == "gpu" else "cpu")


def _autocast(torch_device):
    import torch
    if torch_device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _seed_everything(seed: int) -> None:
    import torch
    from monai.utils import set_determinism
    set_determinism(seed=seed)
    torch.manual_seed(seed)
    # Deterministic kernels where the backend has them (warn_only: a few CUDA 3-D ops have none).
    torch.use_deterministic_algorithms(True, warn_only=True)


def _crop(config: AARConfig, patch: tuple, by_classes, by_pos_neg):
    """The training crop of :attr:`AARConfig.hip_crop_weight` (MONAI transform classes passed in)."""
    if config.hip_crop_weight > 0:
        hips = config.hip_crop_weight
        ratios = [1.0 if value in (schema.BACKGROUND, schema.OTHER_BONE) else hips for value in range(N_CLASSES)]
        # warn=False: a case without one of the classes (a hip outside the volume) gets crops of the others.
        return by_classes(keys=["image", "label"], label_key="label", spatial_size=patch, ratios=ratios,
                          num_classes=N_CLASSES, num_samples=config.samples_per_case, warn=False)
    return by_pos_neg(keys=["image", "label"], label_key="label", spatial_size=patch, pos=2.0, neg=1.0,
                      num_samples=config.samples_per_case)


def train_fold(samples: list, fold: int, round_: int, config: AARConfig, device: str, out: Path,
               progress: Optional[Callable[[int, int], None]] = None) -> Path:
    """Train one fold's network on ``samples`` (the other folds' cases) and save its checkpoint.

    The checkpoint (written atomically) holds the weights, the network settings and the ids of the
    cases it trained on, which :func:`predict` checks against.
    """
    import torch
    from monai.data import DataLoader, Dataset
    from monai.losses import DiceCELoss
    from monai.transforms import (Compose, RandCropByLabelClassesd, RandCropByPosNegLabeld, RandScaleIntensityd,
                                  RandShiftIntensityd, SpatialPadd)

    from .augment import RandMirrorSidesd

    seed = int(np.random.SeedSequence([config.seed, round_, fold]).generate_state(1)[0])
    _seed_everything(seed)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    torch_device = _torch_device(device)
    patch = (config.patch_size,) * 3
    transform = Compose([
        SpatialPadd(keys=["image", "label"], spatial_size=patch),
        _crop(config, patch, RandCropByLabelClassesd, RandCropByPosNegLabeld),
        *([RandMirrorSidesd(keys=["image", "label"], label_key="label", prob=0.5)] if config.mirror_sides else []),
        RandShiftIntensityd(keys="image", offsets=0.03, prob=0.5),
        RandScaleIntensityd(keys="image", factors=0.05, prob=0.5),
    ])
    data = [{"image": s.image[None], "label": s.label[None]} for s in samples]
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(Dataset(data, transform), batch_size=config.batch_size, shuffle=True, num_workers=0,
                        generator=generator)
    model = make_network(config.model, config.width, config.patch_size, config.dropout).to(torch_device)
    if torch_device.type == "cuda":
        model = model.to(memory_format=torch.channels_last_3d)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=1e-5)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=config.epochs * len(loader))
    # batch=True: the Dice of each class over the whole batch (nnU-Net's batch Dice). A crop centred on
    # one class lacks most others, and a per-patch Dice of an absent class only teaches "predict none".
    loss_function = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
    model.train()
    start = time.perf_counter()
    if progress:
        progress(0, config.epochs)  # the fold starts now: its elapsed time and ETA count from here
    for epoch in range(config.epochs):
        # Summed where the loss is: reading it back each step would wait for the GPU every step.
        epoch_loss = torch.zeros((), device=torch_device)
        for batch in loader:
            image = batch["image"].to(torch_device)
            label = batch["label"].to(torch_device).long()
            if torch_device.type == "cuda":
                image = image.contiguous(memory_format=torch.channels_last_3d)
            optimiser.zero_grad(set_to_none=True)
            with _autocast(torch_device):
                logits = model(image)
            loss = loss_function(logits.float(), label)
            loss.backward()
            optimiser.step()
            scheduler.step()
            epoch_loss += loss.detach()
        if progress:
            progress(epoch + 1, config.epochs)
    checkpoint = {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "model": config.model, "width": config.width, "patch_size": config.patch_size, "dropout": config.dropout,
        "fold": fold, "round": round_, "seed": seed, "train_cases": sorted(s.case_id for s in samples),
        "final_loss": float(epoch_loss) / max(1, len(loader)) if config.epochs else None,  # last epoch's mean
        "train_s": round(time.perf_counter() - start, 2), "complete": True,
    }
    with atomic_path(out) as tmp:
        torch.save(checkpoint, tmp)
    return out


def load_model(path: Path, device: str):
    """(model in eval mode, checkpoint dict) from a fold checkpoint.

    Raises
    ------
    InputError
        ``path`` is not a thagpu checkpoint, or its weights do not fit the network it names (a
        checkpoint saved by another thagpu version: since SegResNet uses PReLU, its older
        checkpoints carry no PReLU weights).
    """
    import pickle

    import torch
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        name, width, patch = checkpoint["model"], checkpoint["width"], checkpoint["patch_size"]
        state = checkpoint["state_dict"]
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError, KeyError, TypeError) as error:
        raise InputError(path, f"not a thagpu fold checkpoint ({describe(error)})") from error
    try:
        model = make_network(name, width, patch, checkpoint.get("dropout", 0.0))  # older checkpoints: no dropout
    except ValueError as error:
        raise InputError(path, describe(error)) from error
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        # PyTorch lists every missing and unexpected key over many lines; one line names the cause.
        raise InputError(path, f"its weights do not fit today's {name} network (saved by another thagpu "
                               "version?); train the round again") from error
    model = model.to(_torch_device(device)).eval()
    return model, checkpoint


def predict(model, checkpoint: dict, sample: Sample, device: str, overlap: float) -> np.ndarray:
    """Labels of ``sample`` on its ROI grid by sliding-window inference.

    Raises
    ------
    RuntimeError
        The model trained on this case (out-of-fold prediction would be violated).
    """
    if sample.case_id in checkpoint["train_cases"]:
        raise RuntimeError(f"fold {checkpoint['fold']} trained on {sample.case_id}; it must not predict it")
    return segment(model, sample.image, checkpoint["patch_size"], device, overlap)


def segment(model, image: np.ndarray, patch_size: int, device: str, overlap: float) -> np.ndarray:
    """uint8 labels of a normalised (X, Y, Z) image: sliding-window inference, Gaussian blending.

    On a GPU the forward passes run under bf16 autocast.
    """
    import torch
    from monai.inferers import sliding_window_inference

    torch_device = _torch_device(device)
    tensor = torch.from_numpy(image[None, None]).to(torch_device)
    with torch.no_grad(), _autocast(torch_device):
        logits = sliding_window_inference(tensor, roi_size=(patch_size,) * 3, sw_batch_size=2, predictor=model,
                                          overlap=overlap, mode="gaussian")
    return logits.float().argmax(dim=1)[0].cpu().numpy().astype(np.uint8)

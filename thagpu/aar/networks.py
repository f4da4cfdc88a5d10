"""MONAI segmentation networks by name, sized by one width parameter."""

from __future__ import annotations

import math

from ..config import NETWORK_NAMES

__all__ = ["NETWORKS", "BENCHMARK_NETWORKS", "make_network", "N_CLASSES"]

#: Output classes: the label schema's values 0-5.
N_CLASSES = 6
#: Networks AAR trains.
NETWORKS = ("dynunet", "segresnet", "unet")
#: Networks the model benchmark compares: every network thagpu builds.
BENCHMARK_NETWORKS = NETWORK_NAMES


def make_network(name: str, width: int = 16, patch_size: int = 64, dropout: float = 0.0):
    """A 3-D MONAI network with one CT input channel and :data:`N_CLASSES` outputs.

    Parameters
    ----------
    name : one of :data:`BENCHMARK_NETWORKS`
        ``unetr`` and ``swinunetr`` are sized from ``width`` too (UNETR: ``max(2, width // 4)`` heads of
        32 channels; SwinUNETR: feature size ``width`` rounded to a multiple of 12); UNETR needs
        ``patch_size`` divisible by 16, SwinUNETR at least 64 and divisible by 32.
    width : int
        Channels of the first level, doubled at each level down (capped at 16 x width).
    patch_size : int
        The cubic patch it will see; the number of levels follows from it (down to 4-8 voxels).
    dropout : float
        Dropout probability: in every convolution block of ``unet``, ``attention_unet`` and
        ``dynunet``, after the first convolution of ``segresnet``, in the transformer of ``unetr`` and
        ``swinunetr`` (0: none). Monte-Carlo dropout scoring (:mod:`thagpu.aar.strategies`) needs it
        above 0.
    """
    from monai.networks.nets import UNETR, AttentionUnet, DynUNet, SegResNet, SwinUNETR, UNet

    levels = max(2, min(5, (patch_size // 4).bit_length() - 1))  # 16 -> 2, 32 -> 3, 64 -> 4, 128 -> 5
    filters = [min(width * 2 ** i, width * 16) for i in range(levels + 1)]
    if name == "dynunet":
        strides = [1] + [2] * levels
        return DynUNet(spatial_dims=3, in_channels=1, out_channels=N_CLASSES, kernel_size=[3] * (levels + 1),
                       strides=strides, upsample_kernel_size=strides[1:], filters=filters, res_block=True,
                       dropout=dropout or None)
    if name == "segresnet":
        # PReLU, not MONAI's default ReLU: SegResNet ends in norm, activation and a 1 x 1 x 1 convolution
        # of ``width`` channels, and after a ReLU each class's logit is a weighted sum of non-negative
        # features; at width 8 one seed of the model benchmark's ``cpu`` preset lost a class for good
        # (every feature that lit its voxels lit the pelvis's more: docs/benchmarks.md). UNet's PReLU
        # features are signed.
        return SegResNet(spatial_dims=3, in_channels=1, out_channels=N_CLASSES, init_filters=width,
                         act=("PRELU", {}), norm=("GROUP", {"num_groups": math.gcd(8, width)}),
                         blocks_down=tuple([1] + [2] * levels),
                         blocks_up=tuple([1] * levels), dropout_prob=dropout or None)
    if name == "unet":
        return UNet(spatial_dims=3, in_channels=1, out_channels=N_CLASSES, channels=tuple(filters),
                    strides=tuple([2] * levels), num_res_units=1, dropout=dropout)
    if name == "attention_unet":
        return AttentionUnet(spatial_dims=3, in_channels=1, out_channels=N_CLASSES, channels=tuple(filters),
                             strides=tuple([2] * levels), dropout=dropout)
    if name == "unetr":
        heads = max(2, width // 4)
        return UNETR(in_channels=1, out_channels=N_CLASSES, img_size=patch_size, feature_size=width,
                     hidden_size=heads * 32, mlp_dim=heads * 64, num_heads=heads, spatial_dims=3, dropout_rate=dropout)
    if name == "swinunetr":
        if patch_size % 32 or patch_size < 64:
            raise ValueError("swinunetr needs a patch size of at least 64, divisible by 32")
        return SwinUNETR(in_channels=1, out_channels=N_CLASSES, feature_size=max(12, 12 * round(width / 12)),
                         spatial_dims=3, use_v2=True, drop_rate=dropout)
    raise ValueError(f"unknown network {name!r}; choose from {', '.join(BENCHMARK_NETWORKS)}")

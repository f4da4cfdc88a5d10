"""MONAI segmentation networks by name, sized by one width parameter."""

from __future__ import annotations

__all__ = ["NETWORKS", "make_network", "N_CLASSES"]

#: Output classes: the label schema's values 0-5.
N_CLASSES = 6
NETWORKS = ("dynunet", "segresnet", "unet")


def make_network(name: str, width: int = 16, patch_size: int = 64):
    """A 3-D MONAI network with one CT input channel and :data:`N_CLASSES` outputs.

    Parameters
    ----------
    name : {"dynunet", "segresnet", "unet"}
    width : int
        Channels of the first level, doubled at each level down (capped at 16 x width).
    patch_size : int
        The cubic patch it will see; the number of levels follows from it (down to 4-8 voxels).
    """
    from monai.networks.nets import DynUNet, SegResNet, UNet

    levels = max(2, min(5, (patch_size // 4).bit_length() - 1))  # 16 -> 2, 32 -> 3, 64 -> 4, 128 -> 5
    filters = [min(width * 2 ** i, width * 16) for i in range(levels + 1)]
    if name == "dynunet":
        strides = [1] + [2] * levels
        return DynUNet(spatial_dims=3, in_channels=1, out_channels=N_CLASSES, kernel_size=[3] * (levels + 1),
                       strides=strides, upsample_kernel_size=strides[1:], filters=filters, res_block=True)
    if name == "segresnet":
        return SegResNet(spatial_dims=3, in_channels=1, out_channels=N_CLASSES, init_filters=width,
                         norm=("GROUP", {"num_groups": min(8, width)}),
                         blocks_down=tuple([1] + [2] * (levels - 1) + [2])[: levels + 1],
                         blocks_up=tuple([1] * levels))
    if name == "unet":
        return UNet(spatial_dims=3, in_channels=1, out_channels=N_CLASSES, channels=tuple(filters),
                    strides=tuple([2] * levels), num_res_units=1)
    raise ValueError(f"unknown network {name!r}; choose from {', '.join(NETWORKS)}")

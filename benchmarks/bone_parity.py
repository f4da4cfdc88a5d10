"""CPU/GPU parity of bone extraction on one phantom: prints one JSON line.

python -m benchmarks.bone_parity SEED PRESET SIZE
"""

from __future__ import annotations

import json
import sys


def main(argv):
    seed, preset, size = int(argv[0]), argv[1], argv[2]
    from thagpu.bone import extract_bone
    from thagpu.device import to_device, to_host
    from thagpu.phantom import make_phantom

    volume = make_phantom(seed, size=size, preset=preset).to_volume()
    cpu = extract_bone(volume)
    gpu = extract_bone(volume.with_array(to_device(volume.array, "gpu")))
    cpu_mask, gpu_mask = cpu.mask, to_host(gpu.mask)
    cpu_cut, gpu_cut = cpu.cut, to_host(gpu.cut)
    print(json.dumps({
        "seed": seed, "preset": preset, "size": size, "shape": list(volume.shape),
        "mask_voxels_cpu": int(cpu_mask.sum()), "mask_voxels_differing": int((cpu_mask != gpu_mask).sum()),
        "cut_voxels_differing": int((cpu_cut != gpu_cut).sum()),
        "cut_energy_cpu": cpu.diagnostics["cut_energy"], "cut_energy_gpu": gpu.diagnostics["cut_energy"],
    }))


if __name__ == "__main__":
    main(sys.argv[1:])

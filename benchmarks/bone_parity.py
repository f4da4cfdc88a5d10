"""CPU/GPU parity of bone extraction on one phantom: prints one JSON line.

python -m benchmarks.bone_parity SEED PRESET SIZE [DEVICE]

DEVICE (default ``gpu``) is the device compared with the CPU; ``cpu`` is a dry run (the CPU against
itself). Both cuts are scored on one energy, the whole volume's built on the CPU in float64 sums
(``energy_of``), so that ``energy_gap_rel`` compares two labellings, not two float32 energies; each
device's own minimum (``extract_bone``'s ``cut_energy`` of its solved box) is reported too. The
tolerances that ``tests/test_gpu_parity.py`` applies are explained there.
"""

from __future__ import annotations

import json
import sys


def main(argv):
    seed, preset, size = int(argv[0]), argv[1], argv[2]
    device = argv[3] if len(argv) > 3 else "gpu"
    from benchmarks.common import code_version
    from thagpu.bone import build_energy, energy_of, extract_bone
    from thagpu.config import BoneConfig
    from thagpu.device import resolve_device, to_device, to_host
    from thagpu.phantom import make_phantom

    device = resolve_device(device)
    volume = make_phantom(seed, size=size, preset=preset).to_volume()
    cpu = extract_bone(volume)
    other = extract_bone(volume.with_array(to_device(volume.array, device)))
    cpu_mask, other_mask = cpu.mask, to_host(other.mask)
    cpu_cut, other_cut = cpu.cut, to_host(other.cut)
    energy, _, _ = build_energy(volume.array, volume.spacing, BoneConfig())
    on_cpu_energy = [energy_of(cpu_cut, energy), energy_of(other_cut, energy)]
    print(json.dumps({
        "seed": seed, "preset": preset, "size": size, "device": device, "shape": list(volume.shape),
        "mask_voxels_cpu": int(cpu_mask.sum()), "mask_voxels_differing": int((cpu_mask != other_mask).sum()),
        "cut_voxels_differing": int((cpu_cut != other_cut).sum()),
        "cut_energy_cpu": cpu.diagnostics["cut_energy"], "cut_energy_gpu": other.diagnostics["cut_energy"],
        "whole_volume_energy_cpu_cut": on_cpu_energy[0], "whole_volume_energy_gpu_cut": on_cpu_energy[1],
        "energy_gap_rel": (on_cpu_energy[1] - on_cpu_energy[0]) / on_cpu_energy[0],
        **code_version(),
    }))


if __name__ == "__main__":
    main(sys.argv[1:])

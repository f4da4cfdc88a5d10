"""Max-flow on what the reduction left free, and the full-grid reference a user would write.

PyMaxflow (Boykov-Kolmogorov) runs on the CPU. Only free voxels become
nodes; every array the graph needs is built with vectorised calls
(``add_edges``, ``add_grid_tedges``), the slow point of PyMaxflow being
per-edge Python calls, not the max-flow itself.
"""

from __future__ import annotations

import maxflow
import numpy as np

from ..device import get_array_module, to_host
from .energy import Energy
from .reduction import BONE, Reduction

__all__ = ["solve_reduced", "solve_full_grid"]

#: Capacity standing for "infinite" in the full-grid reference (seeds).
SEED_CAPACITY = 1e9


def solve_reduced(energy: Energy, reduction: Reduction) -> tuple:
    """Minimum cut over the free voxels; returns (bone mask on the energy's device, stats)."""
    xp = get_array_module(energy.cost_bone)
    free = reduction.free
    n_free = int(free.sum())
    labels = reduction.fixed == BONE
    stats = {"graph_nodes": n_free, "graph_edges": 0, "max_flow": 0.0}
    if n_free == 0:
        return labels, stats
    ids = xp.full(energy.shape, -1, dtype=xp.int32)
    ids[free] = xp.arange(n_free, dtype=xp.int32)
    # Terminal capacities: the cost of each label, with links to fixed voxels folded in.
    cost_if_background = to_host((energy.cost_background + reduction.to_bone)[free]).astype(np.float64)
    cost_if_bone = to_host((energy.cost_bone + reduction.to_background)[free]).astype(np.float64)
    pairs = []
    for nb, w in energy.links:
        both = free[nb.src] & free[nb.dst]
        if bool(both.any()):
            pairs.append((to_host(ids[nb.src][both]), to_host(ids[nb.dst][both]),
                          to_host(w[both]).astype(np.float64)))
    n_edges = sum(len(p[0]) for p in pairs)
    graph = maxflow.Graph[float](n_free, n_edges)
    nodes = graph.add_nodes(n_free)
    # Source side = bone: a node ending on the sink side (background) cuts its source edge.
    graph.add_grid_tedges(nodes, cost_if_background, cost_if_bone)
    for i, j, w in pairs:
        graph.add_edges(i, j, w, w)
    flow = graph.maxflow()
    on_sink = graph.get_grid_segments(nodes)
    bone_nodes = xp.asarray(~on_sink)
    labels[free] = bone_nodes
    stats.update(graph_edges=n_edges, max_flow=float(flow))
    return labels, stats


def solve_full_grid(energy: Energy) -> tuple:
    """The plain full-grid graph cut a user would write with PyMaxflow (reference and baseline).

    Every voxel is a node, every link an edge, seeds are terminal edges of
    capacity :data:`SEED_CAPACITY`. Returns (bone mask on the host, stats).
    """
    cost_bone = to_host(energy.cost_bone).astype(np.float64)
    cost_background = to_host(energy.cost_background).astype(np.float64)
    bone_seed = to_host(energy.bone_seed)
    background_seed = to_host(energy.background_seed)
    shape = cost_bone.shape
    graph = maxflow.Graph[float]()
    nodes = graph.add_grid_nodes(shape)
    for nb, w in energy.links:
        weights = np.zeros(shape)
        weights[nb.src] = to_host(w)
        structure = np.zeros((3, 3, 3))
        structure[tuple(1 + o for o in nb.offset)] = 1.0
        graph.add_grid_edges(nodes, weights=weights, structure=structure, symmetric=True)
    graph.add_grid_tedges(nodes, cost_background + SEED_CAPACITY * bone_seed,
                          cost_bone + SEED_CAPACITY * background_seed)
    flow = graph.maxflow()
    labels = ~graph.get_grid_segments(nodes)
    return labels, {"graph_nodes": int(np.prod(shape)), "graph_edges": graph.get_edge_count(),
                    "max_flow": float(flow)}

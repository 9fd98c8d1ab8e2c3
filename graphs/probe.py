"""Probe points: where every converter evaluates its network for the graph's probe features.

Kofinas et al. (neural-graphs) give each neuron node its activations at a few input points
("probe features"). The points are the same for every INR, so a column of ``probe [N, K]``
means the same place in every graph and the features keep the hidden-neuron permutation
symmetry (they permute with the neurons). gmn_inr fixes the points instead of learning
them so a graph does not depend on an encoder.
"""
from __future__ import annotations

import torch

#: per-axis coordinates of the probe grid: cell centres of an 8x8x8 grid over [-0.8, 0.8]^3,
#: the box the zoo's objects fill (fields take xyz in [-1, 1]). 8^3 rather than 4^3: on the cpu
#: zoo a linear classifier on the output neurons' probes alone reaches ~75% instead of ~55%.
PROBE_AXIS = (-0.7, -0.5, -0.3, -0.1, 0.1, 0.3, 0.5, 0.7)


def probe_points() -> torch.Tensor:
    """``[K, 3]`` probe points (K = 512), x slowest."""
    a = torch.tensor(PROBE_AXIS)
    return torch.cartesian_prod(a, a, a)


#: number of probe points, i.e. the width of ``ParameterGraph.probe``
NUM_PROBES = len(PROBE_AXIS) ** 3

"""MoEfication's partition (Zhang et al., 2022): a SwiGLU feed-forward block's neurons cut into
experts of equal width, neurons that fire together on the calibration text in the same expert.

Each neuron i contributes down[:, i] * h_i with h = silu(gate x) * (up x); any partition of the
neurons into groups therefore sums, over all groups, to the dense block exactly. Grouping by
co-activation makes the few groups that matter for a token hold most of its output.
"""

from __future__ import annotations

import numpy as np

SAMPLE_TOKENS = 4096  # tokens whose activations describe a neuron; more changes the clusters little
ROUNDS = 10


def swiglu_hidden(mlp, x):
    """h = silu(gate x) * (up x), the activations the down projection reads: [tokens, width]."""
    import torch

    with torch.no_grad():
        return torch.nn.functional.silu(mlp.gate_proj(x)) * mlp.up_proj(x)


def partition_neurons(hidden, experts: int, seed: int = 0) -> np.ndarray:
    """[experts, width / experts] neuron indices from ``hidden`` ([tokens, width] activations):
    balanced k-means on each neuron's normalised |activation| profile across the tokens."""
    width = hidden.shape[1]
    size = width // experts
    rng = np.random.default_rng(seed)
    profile = np.abs(hidden.float().numpy())
    if profile.shape[0] > SAMPLE_TOKENS:
        profile = profile[np.sort(rng.choice(profile.shape[0], SAMPLE_TOKENS, replace=False))]
    features = profile.T / (np.linalg.norm(profile.T, axis=1, keepdims=True) + 1e-12)  # [width, tokens]
    centroids = features[rng.choice(width, experts, replace=False)]
    assignment = None
    for _ in range(ROUNDS):
        new = _balanced_assignment(features @ centroids.T, size)
        if assignment is not None and np.array_equal(new, assignment):
            break
        assignment = new
        for expert in range(experts):
            centre = features[assignment == expert].mean(axis=0)
            centroids[expert] = centre / (np.linalg.norm(centre) + 1e-12)
    return np.stack([np.flatnonzero(assignment == expert) for expert in range(experts)])


def _balanced_assignment(similarity: np.ndarray, size: int) -> np.ndarray:
    """Each neuron to a cluster, exactly ``size`` per cluster: the most similar (neuron, cluster)
    pairs first, a full cluster taking no more."""
    width, experts = similarity.shape
    order = np.argsort(-similarity, axis=None, kind="stable")
    assignment = np.full(width, -1)
    room = np.full(experts, size)
    for flat in order:
        neuron, expert = divmod(int(flat), experts)
        if assignment[neuron] < 0 and room[expert] > 0:
            assignment[neuron] = expert
            room[expert] -= 1
    return assignment

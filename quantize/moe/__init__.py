"""Mixture-of-Experts for small machines: the routing report, expert pruning and dense -> MoE."""

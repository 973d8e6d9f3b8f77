"""Cluster-level steering (METHOD §7): settings, sources, the intervention and its
measurement."""

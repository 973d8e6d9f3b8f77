"""Rate-distortion clustering and its single-view baselines (METHOD §5, §6), on arrays."""

"""The model side: loading any causal LM, its generic layout, feature bases and transcoders,
and the demeaned-logit target that attribution and steering share."""

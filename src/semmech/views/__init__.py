"""The two views of a continuation distribution: sampling, semantic embeddings and
attribution signatures (METHOD §2-§4)."""

"""Figures, tables, cluster summaries, the cluster browser and the paper's generated text
(METHOD §8), from data in memory."""

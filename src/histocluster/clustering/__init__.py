"""Clustering cells: embedding assembly, reduction and the 2-D map, clusterers,
representatives and summaries, the CPU/GPU compute backend, and the cluster plots.

Owned by the ``clustering`` pipeline."""

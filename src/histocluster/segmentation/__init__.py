"""Nuclei segmentation: the segmenter protocol and its back-ends (watershed with a
threshold or network foreground, Cellpose-SAM), stitching across tiles, the cell-table
measurements, the per-slide tile pass, and scoring against ground truth.

Owned by the ``segmentation`` and ``evaluation`` pipelines."""

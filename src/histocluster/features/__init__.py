"""Per-cell features: crops and pixels of cells, texture and ring features, the
morphology embedding, ResNet-50 crop features, standardisation and combination.

Computed in the segmentation pass (pixels) and combined by the ``clustering`` pipeline."""

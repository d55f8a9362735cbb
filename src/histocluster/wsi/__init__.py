"""Whole-slide images: reading slides and plain images, region files, tissue detection,
the tile grid, per-tile quality, stain separation, and the tiling/filtering pictures.

Owned by the ``tiling`` and ``filtering`` pipelines; every other stage may use it."""

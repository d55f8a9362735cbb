"""Custom Kedro datasets for what kedro-datasets lacks."""

from histocluster.datasets.slide_folder import SlideFolderDataset

__all__ = ["SlideFolderDataset"]

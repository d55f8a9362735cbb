"""Custom Kedro datasets for what kedro-datasets lacks."""

from histocluster.datasets.embeddings import EmbeddingsDataset
from histocluster.datasets.geojson import GeoJSONStreamDataset, StreamedJSONDataset
from histocluster.datasets.label_mask import LabelMaskDataset
from histocluster.datasets.partitions import OptionalPartitionedDataset
from histocluster.datasets.slide_folder import SlideFolderDataset

__all__ = [
    "EmbeddingsDataset",
    "GeoJSONStreamDataset",
    "LabelMaskDataset",
    "OptionalPartitionedDataset",
    "SlideFolderDataset",
    "StreamedJSONDataset",
]

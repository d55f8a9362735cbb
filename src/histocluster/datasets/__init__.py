"""Custom Kedro datasets for what kedro-datasets lacks, and kedro-datasets' own types with
saves that are all or nothing (:mod:`histocluster.datasets.atomic`)."""

from histocluster.datasets.anndata_file import AnnDataDataset
from histocluster.datasets.atomic import (
    CSVDataset,
    ImageDataset,
    JSONDataset,
    ParquetDataset,
    PickleDataset,
    PlotlyJSONDataset,
    TextDataset,
)
from histocluster.datasets.embeddings import EmbeddingsDataset
from histocluster.datasets.geojson import GeoJSONStreamDataset, StreamedJSONDataset
from histocluster.datasets.label_mask import LabelMaskDataset
from histocluster.datasets.newest_pickle import NewestPickleDataset
from histocluster.datasets.partitions import OptionalPartitionedDataset
from histocluster.datasets.slide_folder import SlideFolderDataset
from histocluster.datasets.spatialdata_zarr import SpatialDataDataset

__all__ = [
    "AnnDataDataset",
    "CSVDataset",
    "EmbeddingsDataset",
    "GeoJSONStreamDataset",
    "ImageDataset",
    "JSONDataset",
    "LabelMaskDataset",
    "NewestPickleDataset",
    "OptionalPartitionedDataset",
    "ParquetDataset",
    "PickleDataset",
    "PlotlyJSONDataset",
    "SlideFolderDataset",
    "SpatialDataDataset",
    "StreamedJSONDataset",
    "TextDataset",
]

"""Nodes of the ``evaluation`` pipeline."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import pandas as pd

from histocluster.params import EvaluationParams, SegmentationParams
from histocluster.segmentation_evaluation import evaluate, format_summary
from histocluster.segmenters.watershed import segment_nuclei

logger = logging.getLogger(__name__)


def evaluate_segmentation(
    params: EvaluationParams, segmentation: SegmentationParams
) -> tuple[pd.DataFrame, dict]:
    """Run the configured segmenter on every bench image; per-image scores and a summary
    (object F1 at IoU ≥ 0.5, AJI, PQ, mAP; per organ and mean), also logged as a table."""
    segment = partial(segment_nuclei, settings=segmentation.watershed)
    scores, summary = evaluate(Path(params.bench_dir), segment, params.resolution_mpp)
    summary["segmenter"] = segmentation.segmenter
    summary["settings"] = (
        segmentation.watershed.__dict__ if hasattr(segmentation.watershed, "__dict__") else {}
    )
    logger.info("Segmentation scores on %s:\n%s", params.bench_dir, format_summary(scores, summary))
    return scores, summary

"""Nodes of the ``evaluation`` pipeline."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pandas as pd

from histocluster.segmentation.evaluation import evaluate, format_summary
from histocluster.segmentation.segmenter import make_segmenter
from histocluster.segmentation.settings import EvaluationParams, SegmentationParams

logger = logging.getLogger(__name__)


def evaluate_segmentation(
    params: EvaluationParams, segmentation: SegmentationParams
) -> tuple[pd.DataFrame, dict]:
    """Run the configured segmenter on every bench image; per-image scores and a summary
    (object F1 at IoU ≥ 0.5, AJI, PQ, mAP; per organ and mean), also logged as a table."""
    segmenter = make_segmenter(segmentation)
    scores, summary = evaluate(
        Path(params.bench_dir), lambda rgb, mpp: segmenter.segment([rgb], mpp)[0], params.resolution_mpp
    )
    settings = segmentation.watershed if segmentation.segmenter == "watershed" else segmentation.cellpose
    summary["segmenter"] = segmentation.segmenter
    summary["settings"] = dataclasses.asdict(settings)
    logger.info("Segmentation scores on %s:\n%s", params.bench_dir, format_summary(scores, summary))
    return scores, summary

"""Asking the model about each cluster's representatives, from the crops the clustering
stage saved (read once, resized here to what the model is sent)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict

import numpy as np
import pandas as pd
from PIL import Image

from histocluster.clustering.summary import crop_key
from histocluster.labelling.cluster_labels import ASKED
from histocluster.labelling.credentials import Secret
from histocluster.labelling.settings import ClassificationParams
from histocluster.labelling.vlm_client import Answer, AnswerCache, VLMClassifier
from histocluster.lazy import materialise

logger = logging.getLogger(__name__)

ANSWER_COLUMNS = [
    "cluster_id",
    "rank",
    "cell_id",
    "label",
    "status",
    "raw",
    "cached",
    "cost_usd",
    "error",
    "model",
]


def model_image(image: Image.Image, size: int) -> np.ndarray:
    """A saved crop as the RGB array sent to the model: ``size`` × ``size`` px."""
    image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(image)


def ask_about_representatives(
    representatives: pd.DataFrame,
    crops: dict[str, Callable[[], Image.Image]],
    params: ClassificationParams,
    api_key: Secret | None,
) -> pd.DataFrame:
    """One row per asked representative (the first ``params.representatives`` of each
    cluster that has a crop): the model's label, status, raw answer, cost. Without an API
    key, or with ``representatives: 0``, nothing is asked and every row says ``skipped``."""
    chosen = representatives[representatives["rank"] < params.representatives].sort_values(
        ["cluster_id", "rank"]
    )
    keys = [crop_key(r.cluster_id, r.rank, r.cell_id) for r in chosen.itertuples()]
    have = np.array([key in crops for key in keys], dtype=bool)
    if (~have).any():
        logger.warning(
            "Classification: %d representatives have no crop (see the clustering log)", (~have).sum()
        )
    chosen = chosen[have]
    keys = [k for k, ok in zip(keys, have, strict=True) if ok]
    if params.representatives == 0:
        logger.info("Classification: representatives is 0, the model is not asked")
        answers = [Answer(None, "skipped", error="representatives: 0")] * len(keys)
    elif api_key is None:
        logger.warning(
            "Classification: no API key (credentials `openai: {api_key: ...}` in conf/local/credentials.yml "
            "or OPENAI_API_KEY): the model step is skipped; labels from %s still apply",
            params.labels_file,
        )
        answers = [Answer(None, "skipped", error="no API key")] * len(keys)
    else:
        vocabulary = params.vocabulary
        classifier = VLMClassifier(
            params.vlm, api_key.reveal(), vocabulary.prompt, vocabulary.labels, AnswerCache(params.cache_dir)
        )
        images = [model_image(materialise(crops[k]), params.image_size) for k in keys]
        answers = classifier.ask(images, crop_spec=f"image_size={params.image_size}")
    table = pd.DataFrame([asdict(a) for a in answers], columns=list(Answer.__dataclass_fields__))
    table = pd.concat([chosen[["cluster_id", "rank", "cell_id"]].reset_index(drop=True), table], axis=1)
    table["model"] = np.where(table["status"].isin(ASKED), params.vlm.model, None)  # only where it was asked
    return table[ANSWER_COLUMNS]

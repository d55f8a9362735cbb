"""Parameter models of the classification stage: no heavy imports."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass as settings_dataclass

from histocluster.strict_model import Strict


@settings_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class VLMSettings:
    """How the model is asked (see the module doc)."""

    model: str = "gpt-4o"
    base_url: str | None = Field(None, description="an OpenAI-compatible server; null = api.openai.com")
    temperature: float = Field(0.0, ge=0, le=2)
    max_tokens: int = Field(50, ge=1)
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(4, ge=0)
    concurrency: int = Field(4, ge=1)
    max_requests: int = Field(500, ge=0, description="requests sent per run (cache hits are free)")
    max_cost_usd: float = Field(5.0, ge=0, description="estimated from token usage and the prices below")
    usd_per_million_input_tokens: float = Field(2.5, ge=0)
    usd_per_million_output_tokens: float = Field(10.0, ge=0)
    structured_output: bool = Field(True, description="ask for JSON with the label from an enum")


class LabelSet(Strict):
    """A vocabulary and the question asked about each crop."""

    labels: list[str] = Field(min_length=2)
    prompt: str = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> LabelSet:
        folded = [label.casefold() for label in self.labels]
        if len(set(folded)) != len(folded) or any(not label.strip() for label in self.labels):
            raise ValueError(f"labels must be non-empty and unique, got {self.labels}")
        return self


_HE_PROMPT = (
    "This is a crop of an H&E-stained tissue section; the cell in its centre is outlined in green. "
    "What type of cell is the outlined cell? If the outline is not around a cell nucleus "
    "(keratin, debris, a fold, pigment), answer artefact."
)


DEFAULT_LABEL_SETS = {
    "he_general": LabelSet(
        labels=[
            "epithelial",
            "tumour",
            "lymphocyte",
            "plasma cell",
            "neutrophil",
            "eosinophil",
            "macrophage",
            "fibroblast",
            "endothelial",
            "smooth muscle",
            "necrotic",
            "other",
            "artefact",
        ],
        prompt=_HE_PROMPT,
    ),
    "pancreatic_islet": LabelSet(
        labels=[
            "alpha cell",
            "beta cell",
            "delta cell",
            "acinar cell",
            "ductal cell",
            "endothelial cell",
            "immune cell",
            "other",
        ],
        prompt=(
            "This is a crop of a stained section of pancreas; the cell in its centre is outlined in green. "
            "What type of cell is the outlined cell?"
        ),
    ),
}


class CellTypeModelSettings(Strict):
    """How the cell-type model is trained from the named clusters
    (:mod:`histocluster.labelling.cell_type_model`)."""

    classifier: Literal["logistic_regression", "gradient_boosting", "knn"] = Field(
        "logistic_regression", description="measured best on CoNSeP transfer (docs/benchmarks.md)"
    )
    max_cells: int = Field(200_000, ge=10, description="training cells; a weighted sample beyond")
    representative_weight: float = Field(
        1.0, ge=0, description="weight of representatives; other members weigh their label confidence"
    )
    prename_agreement: float = Field(
        0.6,
        ge=0,
        le=1,
        description="a new cluster takes the model's name when this share of its cells get it",
    )


class ClassificationParams(Strict):
    """Parameters of the ``classification`` pipeline."""

    label_set: str = Field("he_general", description="which of label_sets the model answers from")
    label_sets: dict[str, LabelSet] = Field(default_factory=lambda: dict(DEFAULT_LABEL_SETS))
    representatives: int = Field(10, ge=0, description="crops per cluster shown to the model; 0 skips it")
    image_size: int = Field(
        256, ge=32, description="crop side sent to the model, px (clustering.representatives crops, resized)"
    )
    vlm: VLMSettings = VLMSettings()
    agreement_threshold: float = Field(0.6, ge=0, le=1, description="below: the cluster is marked for review")
    labels_file: str = Field("conf/local/cluster_labels.yml", description="a person's labels (YAML or CSV)")
    noise: Literal["nearest", "unlabelled"] = "nearest"
    cache_dir: str = Field("data/07_model_output/vlm_cache", description="answers cached on disk")
    cell_type_model: CellTypeModelSettings = CellTypeModelSettings()

    @model_validator(mode="after")
    def _known_set(self) -> ClassificationParams:
        if self.label_set not in self.label_sets:
            raise ValueError(
                f"label_set '{self.label_set}' is not one of label_sets {sorted(self.label_sets)}"
            )
        return self

    @property
    def vocabulary(self) -> LabelSet:
        return self.label_sets[self.label_set]


class ApplyParams(Strict):
    """Parameters of the ``apply`` pipeline: the saved cell-type model labels new cells."""

    review_below: float = Field(
        0.5, ge=0, le=1, description="a cell whose most probable type is less probable is `review`"
    )
    cluster_agreement: float = Field(
        0.6,
        ge=0,
        le=1,
        description="a cluster is named after the model's type of at least this share of its cells",
    )

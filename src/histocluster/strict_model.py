"""The base of every parameter model: unknown keys are errors, values are frozen."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """A parameter model that forbids unknown keys (a typo is an error naming the key)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

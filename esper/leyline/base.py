"""The pydantic base every Esper config and schema derives from."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class EsperModel(BaseModel):
    """Strict pydantic model: unknown fields are errors, attribute docstrings become field descriptions."""

    model_config = ConfigDict(
        extra="forbid",
        use_attribute_docstrings=True,
        validate_assignment=True,
        allow_inf_nan=False,
    )

"""The one strict pydantic base and the value types every config section shares.

Every model forbids unknown keys and is frozen: the config is validated once at
start-up and handed down as immutable objects.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

PosFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Target(Strict):
    """One upstream model at one provider: what an alias routes to and what a migration moves between."""

    provider: str = Field(min_length=1)
    model: str = Field(min_length=1)

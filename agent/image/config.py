"""The image's section: ``[image]``, the bake manifest, the image's age, user-data hygiene."""

from __future__ import annotations

from typing import Annotated

from agent.frozen import frozen
from agent.schema.fields import SECTION, AbsoluteFile, span


@frozen()
class ImageConfig:
    """``[image]``: the baked image's manifest, its age, user-data hygiene."""

    __pydantic_config__ = SECTION

    manifest: AbsoluteFile = "/etc/agent/image.json"  # written by `agent bake-check`
    max_age_days: Annotated[float, span(0, 3650)] = 0.0  # 0: never flag the image's age
    check_user_data: bool = True  # flag user-data that looks like it holds a credential

"""A JSON object read from a file the user named, with errors that say which file and what is wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from registry.domain.errors import InvalidInput

__all__ = ["read_json_object"]


def read_json_object(path: Path, what: str = "hyperparameter file") -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InvalidInput(f"{what} {path} does not exist") from None
    except ValueError as exc:
        raise InvalidInput(f"{what} {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"{what} {path} must hold a JSON object")
    return data

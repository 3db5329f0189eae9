"""Every error the registry raises has a status below 500, except those that mean a server fault
(an integrity failure, a bug) or an unavailable one (a schema to upgrade: 503)."""

from __future__ import annotations

import importlib
import pkgutil

import registry
from api.errors import status_of
from registry.domain.errors import WanloraError


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def test_every_error_type_has_a_client_status() -> None:
    for module in pkgutil.walk_packages(registry.__path__, "registry."):
        importlib.import_module(module.name)
    for cls in _subclasses(WanloraError):
        error = cls("x")
        if error.code in ("integrity", "error", "schema_outdated", "out_of_space", "corrupt_artifact", "unavailable"):
            continue
        assert status_of(error) < 500, cls

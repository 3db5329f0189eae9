"""``RegistryService``: the catalogue and the lifecycle as one object, as a unit of work hands it out
(``Wanlora.registry()``). Methods are keyword-only, take plain values, return ``registry.domain``
shapes and never commit: the caller owns the transaction (``Database.session``)."""

from __future__ import annotations

from registry.services.browse import BrowseService
from registry.services.catalogue import CatalogueService
from registry.services.lifecycle import LifecycleService

__all__ = ["RegistryService"]


class RegistryService(CatalogueService, LifecycleService, BrowseService):
    """Every method checks the caller's permission first (deny by default); a version whose status the
    caller may not read does not exist for it."""

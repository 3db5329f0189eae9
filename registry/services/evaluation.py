"""``EvaluationService``: evidence, trials and monitoring as one object, as a unit of work hands it out
(``Wanlora.evaluation()``).

Evidence is bound to the version's files: ``files_digest`` hashes the (role, sha256) pairs, every
evaluation row carries the digest it was made for, and the gate only counts rows whose digest is the
version's. Phases 1 and 2 are recorded by the evaluator (``record``); phase 3 is a ``Trial``: the
candidate is served to a sticky share of jobs (``canary``: a stable hash of the job or client id), the
hosts ``report`` outcomes, and every report re-judges the trial, which passes (an ``evaluations`` row)
or aborts by itself (and rolls the version back if it was made current meanwhile). Each outcome is an
event in the LoRA's log.
"""

from __future__ import annotations

from registry.services.evidence import EvidenceService
from registry.services.monitoring import MonitoringService
from registry.services.trials import TrialService

__all__ = ["EvaluationService"]


class EvaluationService(EvidenceService, TrialService, MonitoringService):
    """Evidence, trials and reports; permissions as in ``RegistryService`` (deny by default)."""

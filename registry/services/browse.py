"""Browsing the catalogue a page at a time, for the dashboard: search and filters run in the database,
so a page costs the same with 10 LoRAs or 10,000."""

from __future__ import annotations

from collections import Counter, defaultdict

import semver
from sqlalchemy import String, and_, cast, exists, false, func, or_
from sqlalchemy import select as sa_select
from sqlmodel import col, select

from registry.db.tables import Lora, Project, Version
from registry.domain.access import Action
from registry.domain.enums import Category, Status
from registry.domain.schemas import LoraPage, LoraSummary
from registry.services.lookups import project_row
from registry.services.scope import Service

__all__ = ["MAX_PAGE", "BrowseService"]

MAX_PAGE = 200


def _like(text: str) -> str:
    """A LIKE pattern matching ``text`` literally anywhere (``\\`` escapes the wildcards)."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class BrowseService(Service):
    def browse(
        self, *, project: str | None = None, search: str | None = None, category: str | None = None,
        status: str | None = None, base_model: str | None = None, trigger: str | None = None,
        offset: int = 0, limit: int = 50,
    ) -> LoraPage:  # fmt: skip
        """One page of the LoRAs the caller may read, with the filters applied; ``total`` counts them all."""
        limit, offset = max(1, min(limit, MAX_PAGE)), max(0, offset)
        if project:
            self.scope.require(project, Action.LORA_READ)
            project_row(self.scope, project)
        visible = [project] if project else self.projects()
        readable = {p: self.scope.readable(p) for p in visible}
        query = select(Lora, Project).join(Project, col(Project.id) == Lora.project_id)
        query = query.where(col(Project.name).in_(visible) if visible else false())
        if category:
            query = query.where(Lora.category == category)
        if base_model:
            query = query.where(Lora.base_model == base_model)
        if search and search.strip():
            pattern = _like(search.strip().lower())
            query = query.where(
                or_(
                    func.lower(Lora.name).like(pattern, escape="\\"),
                    func.lower(Lora.description).like(pattern, escape="\\"),
                    func.lower(cast(Lora.trigger_words, String)).like(pattern, escape="\\"),
                )
            )
        if trigger and trigger.strip():
            quoted = _like('"' + trigger.strip().lower() + '"')
            query = query.where(func.lower(cast(Lora.trigger_words, String)).like(quoted, escape="\\"))
        if status:
            with_status = exists().where(col(Version.lora_id) == col(Lora.id), col(Version.status) == status)
            allowed = [p for p in visible if status in readable[p]]
            query = query.where(and_(col(Project.name).in_(allowed), with_status) if allowed else false())
        total = self.session.exec(select(func.count()).select_from(query.subquery())).one()
        rows = list(self.session.exec(query.order_by(Project.name, Lora.name).offset(offset).limit(limit)).all())
        # Only the columns a summary needs (not the JSON ones): a page is 50 LoRAs × their versions.
        by_lora: dict[int, list[tuple[semver.Version, str, str]]] = defaultdict(list)
        if rows:
            names = ("lora_id", "version", "status", "major", "minor", "patch", "prerelease")
            columns = sa_select(*(col(getattr(Version, n)) for n in names))
            page_ids = [lora.id for lora, _ in rows]
            for lora_id, number, state, major, minor, patch, pre in self.session.execute(
                columns.where(col(Version.lora_id).in_(page_ids))
            ).all():
                by_lora[lora_id].append((semver.Version(major, minor, patch, pre), number, state))
        items = []
        for lora, proj in rows:
            versions = sorted((v for v in by_lora[lora.id or 0] if v[2] in readable[proj.name]), key=lambda v: v[0])
            items.append(
                LoraSummary(
                    project=proj.name, name=lora.name, category=Category(lora.category), base_model=lora.base_model,
                    current_version=next((n for _, n, st in versions if st == Status.CURRENT.value), None),
                    latest_version=versions[-1][1] if versions else None, version_count=len(versions),
                    statuses=dict(Counter(st for _, _, st in versions)), trigger_words=list(lora.trigger_words or []),
                )
            )  # fmt: skip
        return LoraPage(items=items, total=total, offset=offset, limit=limit)

    def projects(self) -> list[str]:
        """The projects whose LoRAs the caller may read."""
        names = self.session.exec(select(Project.name).order_by(Project.name)).all()
        return [p for p in names if self.scope.can(p, Action.LORA_READ)]

    def facets(self) -> dict[str, list[str]]:
        """The values the filters offer: base models and categories in use among readable projects."""
        names = self.projects()
        if not names:
            return {"base_model": [], "category": []}
        query = select(Lora.base_model, Lora.category).join(Project, col(Project.id) == Lora.project_id)
        rows = self.session.exec(query.where(col(Project.name).in_(names)).distinct()).all()
        return {"base_model": sorted({b for b, _ in rows}), "category": sorted({c for _, c in rows})}

"""Email templates: the paginated import from a module's service, local templates, preview
(``GetTemplateHTML``, cached on the row) and publishing (``SetTemplateHTML``).

Import is all-or-nothing. The pages are fetched first, with no transaction open (a module
call may take seconds; holding a write lock that long would stall every other writer of a
SQLite database), then every template is upserted in ONE transaction. So when page 3 fails,
nothing of pages 1 and 2 is stored: the module's error is raised (HTTP 502 with its kind),
the invocation log shows which page failed, and the templates are exactly as they were before
the import. A retry starts from offset 0 and, the upsert being keyed by
(tenant, module, externalId), never duplicates a template.

A module that always returns a full page is stopped after ``max_pages`` calls; what it
returned is stored and the report says ``truncated``.

HTML of a template row: ``html`` holds what the import gave, what was authored locally, or a
cached ``GetTemplateHTML`` answer (then ``html_cached_at`` is set). A preview serves ``html``
when there is one and otherwise asks the module and caches the answer. Publishing replaces the
cache with the HTML just published (the service now holds exactly that); a re-import replaces
it with what the import gives (none: the next preview asks the module again). Templates that
disappear from the service are kept: a truncated import cannot tell "gone" from "not reached".
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from host.calls import ModuleResult
from host.contract.types import ImportTemplate
from host.db.engine import Database
from host.db.models import Template, utcnow
from host.errors import Conflict, InvalidInput, ModuleCallFailed, NotFound, Problem
from host.invoker import ModuleInvoker
from host.tenants import TenantService

IMPORT = "CRM_Marketing_ImportTemplates"
GET_HTML = "CRM_Marketing_GetTemplateHTML"
SET_HTML = "CRM_Marketing_SetTemplateHTML"

DEFAULT_PAGE_SIZE = 50
DEFAULT_MAX_PAGES = 100
MAX_NAME = 500
MAX_HTML_CHARS = 2 * 1024 * 1024

PageCallback = Callable[[int, int, int], None]
"""``on_page(page_number, items_on_page, items_so_far)``, after each page (progress bars)."""


@dataclass(frozen=True)
class ImportReport:
    imported: int
    pages: int
    truncated: bool
    created: int = 0
    updated: int = 0


@dataclass(frozen=True)
class TemplateView:
    id: str
    module: str
    external_id: str | None
    name: str
    subject: str | None
    has_html: bool
    html_cached_at: datetime | None
    published_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: Template) -> TemplateView:
        return cls(
            id=row.id,
            module=row.module_id,
            external_id=row.external_id,
            name=row.name,
            subject=row.subject,
            has_html=row.html is not None,
            html_cached_at=row.html_cached_at,
            published_at=row.published_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class TemplateService:
    def __init__(self, db: Database, invoker: ModuleInvoker, tenants: TenantService):
        self.db = db
        self.invoker = invoker
        self.tenants = tenants

    # --- import ------------------------------------------------------------------------------

    def import_templates(
        self,
        tenant_id: str,
        module_id: str,
        page_size: int = DEFAULT_PAGE_SIZE,
        max_pages: int = DEFAULT_MAX_PAGES,
        on_page: PageCallback | None = None,
    ) -> ImportReport:
        """Page through ``ImportTemplates`` and upsert what came back (see the module doc)."""
        if page_size < 1 or max_pages < 1:
            raise InvalidInput(
                "import is invalid", [Problem("pageSize/maxPages", "must be at least 1")]
            )
        fetched: dict[str, ImportTemplate] = {}  # by externalId; a repeated one: last wins
        pages, truncated, offset = 0, False, 0
        while True:
            page: Sequence[ImportTemplate] = self.invoker.call(
                tenant_id,
                module_id,
                IMPORT,
                # checked before the page's storage writes commit: an invalid page keeps none
                effects=lambda _session, result: _check_page(module_id, result, page_size),
                offset=offset,
                limit=page_size,
            )
            pages += 1
            fetched.update((t.externalId, t) for t in page)
            if on_page is not None:
                on_page(pages, len(page), len(fetched))
            if len(page) < page_size:
                break
            if pages >= max_pages:
                truncated = True
                break
            offset += page_size
        created, updated = self._upsert(tenant_id, module_id, list(fetched.values()))
        return ImportReport(len(fetched), pages, truncated, created, updated)

    def _upsert(
        self, tenant_id: str, module_id: str, items: list[ImportTemplate]
    ) -> tuple[int, int]:
        try:
            return self._upsert_rows(tenant_id, module_id, items)
        except IntegrityError:
            # an import of the same module ran at the same time and created a template first
            raise Conflict("templates changed by a concurrent import; retry the import") from None

    def _upsert_rows(
        self, tenant_id: str, module_id: str, items: list[ImportTemplate]
    ) -> tuple[int, int]:
        created = updated = 0
        with self.db.transaction() as session:
            existing: dict[str, Template] = {}
            external_ids = [t.externalId for t in items]
            for start in range(0, len(external_ids), 500):
                rows = session.scalars(
                    select(Template).where(
                        Template.tenant_id == tenant_id,
                        Template.module_id == module_id,
                        Template.external_id.in_(external_ids[start : start + 500]),
                    )
                )
                existing.update((r.external_id, r) for r in rows if r.external_id)
            for item in items:
                row = existing.get(item.externalId)
                if row is None:
                    row = Template(
                        id=uuid.uuid4().hex,
                        tenant_id=tenant_id,
                        module_id=module_id,
                        external_id=item.externalId,
                    )
                    session.add(row)
                    created += 1
                else:
                    updated += 1
                row.name = item.name
                row.subject = item.subject
                row.html = item.html
                row.html_cached_at = None
        return created, updated

    # --- local templates ---------------------------------------------------------------------

    def create(
        self, tenant_id: str, module_id: str, name: str, html: str, subject: str | None = None
    ) -> TemplateView:
        """A template authored in the CRM for a module enabled for the tenant; it gets an
        external id when it is published."""
        self.tenants.enablement(tenant_id, module_id)  # NotFound unless enabled for tenant
        _check_content(name, html)
        row = Template(
            id=uuid.uuid4().hex,
            tenant_id=tenant_id,
            module_id=module_id,
            name=name,
            subject=subject,
            html=html,
        )
        with self.db.transaction() as session:
            session.add(row)
            session.flush()
            return TemplateView.of(row)

    def of_tenant(self, tenant_id: str, module_id: str | None = None) -> list[TemplateView]:
        """The tenant's templates (without their HTML), of one module or all."""
        query = select(Template).where(Template.tenant_id == tenant_id)
        if module_id:
            query = query.where(Template.module_id == module_id)
        with self.db.transaction() as session:
            rows = session.scalars(query.order_by(Template.module_id, Template.name, Template.id))
            return [TemplateView.of(r) for r in rows]

    def get(self, tenant_id: str, template_id: str) -> TemplateView:
        with self.db.transaction() as session:
            return TemplateView.of(self._row(session, tenant_id, template_id))

    # --- preview and publish -----------------------------------------------------------------

    def html(self, tenant_id: str, template_id: str, *, refresh: bool = False) -> str:
        """The template's HTML: stored (imported, authored or cached) or, failing that (or on
        ``refresh``), asked of the module with ``GetTemplateHTML`` and cached on the row."""
        with self.db.transaction() as session:
            row = self._row(session, tenant_id, template_id)
            module_id, external_id, html = row.module_id, row.external_id, row.html
        if html is not None and not (refresh and external_id):
            return html
        if external_id is None:
            raise NotFound(f"template {template_id} has no HTML")
        fresh: str = self.invoker.call(
            tenant_id, module_id, GET_HTML, templateExternalId=external_id
        )
        with self.db.transaction() as session:
            row = self._row(session, tenant_id, template_id)
            if row.external_id == external_id:  # not republished meanwhile
                row.html, row.html_cached_at = fresh, utcnow()
        return fresh

    def publish(
        self,
        tenant_id: str,
        template_id: str,
        *,
        name: str | None = None,
        subject: str | None = None,
        html: str | None = None,
    ) -> TemplateView:
        """``SetTemplateHTML`` with the template's HTML (updated by the given fields first);
        stores the service's id as ``externalId`` and the published HTML as the cache."""
        with self.db.transaction() as session:
            row = self._row(session, tenant_id, template_id)
            name = row.name if name is None else name
            html = row.html if html is None else html
            subject = row.subject if subject is None else subject
            module_id, external_id = row.module_id, row.external_id
        if html is None:
            raise InvalidInput(
                "template has no HTML to publish", [Problem("html", "give the HTML to publish")]
            )
        _check_content(name, html)
        returned: str = self.invoker.call(
            tenant_id,
            module_id,
            SET_HTML,
            html=html,
            name=name,
            templateExternalId=external_id,
        )
        if not returned or len(returned) > 255:
            raise ModuleCallFailed(
                "invalid_return",
                f"{SET_HTML} must return the template id (1-255 characters)",
                module=module_id,
                function=SET_HTML,
            )
        with self.db.transaction() as session:
            holder = session.scalar(
                select(Template.id).where(
                    Template.tenant_id == tenant_id,
                    Template.module_id == module_id,
                    Template.external_id == returned,
                    Template.id != template_id,
                )
            )
            if holder is not None:
                raise Conflict(
                    f"the service returned template id {returned}, which template {holder} "
                    "already has; import the templates again to reconcile",
                    [Problem("externalId", returned)],
                )
            row = self._row(session, tenant_id, template_id)
            row.name, row.subject, row.html = name, subject, html
            row.external_id = returned
            row.published_at = row.html_cached_at = utcnow()
            session.flush()
            return TemplateView.of(row)

    @staticmethod
    def _row(session: Any, tenant_id: str, template_id: str) -> Template:
        row = session.get(Template, template_id)
        if row is None or row.tenant_id != tenant_id:
            raise NotFound(f"template {template_id} does not exist")
        assert isinstance(row, Template)
        return row


def _check_content(name: str, html: str) -> None:
    problems = []
    if not name.strip() or len(name) > MAX_NAME:
        problems.append(Problem("name", f"must be 1-{MAX_NAME} characters"))
    if len(html) > MAX_HTML_CHARS:
        problems.append(Problem("html", f"must be at most {MAX_HTML_CHARS} characters"))
    if problems:
        raise InvalidInput("template is invalid", problems)


def _check_page(module_id: str, result: ModuleResult, page_size: int) -> None:
    """A page longer than ``limit`` is an invalid return value."""
    if len(result.value) > page_size:
        raise ModuleCallFailed(
            "invalid_return",
            f"{IMPORT} returned {len(result.value)} templates for limit {page_size}",
            module=module_id,
            function=IMPORT,
        )

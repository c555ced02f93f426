"""The jobs list's query string: its filters (?state= ?kind= ?group= ?queue= ?prompt=) and its page (?page= ?limit=)."""
from __future__ import annotations

from genq.core.reads import JobFilter

PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
MAX_FILTER_TEXT = 200
FILTER_FIELDS = {"state": "status", "kind": "kind", "group": "group_id", "queue": "queue", "prompt": "prompt"}


def job_filter(query) -> JobFilter:
    return JobFilter(**{field: (query.get(name) or "").strip()[:MAX_FILTER_TEXT] for name, field in FILTER_FIELDS.items()})


def filter_query(where: JobFilter) -> dict[str, str]:
    """The filter as query parameters (for the pages' links)."""
    return {name: getattr(where, field) for name, field in FILTER_FIELDS.items() if getattr(where, field)}


def page_bounds(query) -> tuple[int, int]:
    """(limit, offset) from ?limit= and ?page= (from 1), clamped."""
    def number(name: str, default: int) -> int:
        try:
            return int(query.get(name, default))
        except ValueError:
            return default
    limit = min(max(number("limit", PAGE_SIZE), 1), MAX_PAGE_SIZE)
    page = max(number("page", 1), 1)
    return limit, (page - 1) * limit

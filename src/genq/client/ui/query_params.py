"""The jobs list's query string: its filters (?state= ?kind= ?group= ?queue= ?prompt=) and its page (?page= ?limit=),
and the numbers other pages take (?after=): a value out of range or not text the store can compare is a 400."""
from __future__ import annotations

import re

from starlette.exceptions import HTTPException

from genq.core.params import text_problem
from genq.core.reads import JobFilter

PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
MAX_PAGE = 1_000_000  # 200 million jobs deep at the largest page: an offset the database takes
MAX_FILTER_TEXT = 200
FILTER_FIELDS = {"state": "status", "kind": "kind", "group": "group_id", "queue": "queue", "prompt": "prompt"}
DIGITS = re.compile(r"[0-9]{1,20}")


def job_filter(query) -> JobFilter:
    values = {}
    for name, field in FILTER_FIELDS.items():
        text = (query.get(name) or "").strip()[:MAX_FILTER_TEXT]
        if problem := text_problem(text):
            raise HTTPException(400, f"{name}: {problem}")
        values[field] = text
    return JobFilter(**values)


def filter_query(where: JobFilter) -> dict[str, str]:
    """The filter as query parameters (for the pages' links)."""
    return {name: getattr(where, field) for name, field in FILTER_FIELDS.items() if getattr(where, field)}


def integer(query, name: str, default: int, low: int, high: int) -> int:
    """?name= as an integer from `low` to `high`, `default` when absent or empty; else a 400."""
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if not DIGITS.fullmatch(raw) or not low <= int(raw) <= high:
        raise HTTPException(400, f"{name} must be an integer from {low} to {high}")
    return int(raw)


def page_bounds(query) -> tuple[int, int]:
    """(limit, offset) from ?limit= and ?page= (from 1)."""
    limit = integer(query, "limit", PAGE_SIZE, 1, MAX_PAGE_SIZE)
    page = integer(query, "page", 1, 1, MAX_PAGE)
    return limit, (page - 1) * limit

"""Values as people read them on the dashboard: relative times (the exact one on hover), durations in words,
numbers rounded as the CLI prints them."""
from __future__ import annotations

import json
from datetime import datetime, timezone

from markupsafe import Markup, escape

from genq.client.render import iso
from genq.core.store.clock import as_utc
from genq.core.store.states import JobStatus

NUMBER_DIGITS = 6  # significant digits, as `client group` prints a float


def rounded(value):
    """Floats to NUMBER_DIGITS significant digits, also inside lists and objects."""
    if isinstance(value, float):
        return float(f"{value:.{NUMBER_DIGITS}g}")
    if isinstance(value, list):
        return [rounded(item) for item in value]
    if isinstance(value, dict):
        return {key: rounded(item) for key, item in value.items()}
    return value


def number(value) -> str:
    """A value as text, floats to NUMBER_DIGITS significant digits (as `client group` prints them), lists and
    objects as JSON."""
    if isinstance(value, float):
        return f"{value:.{NUMBER_DIGITS}g}"
    if isinstance(value, (list, dict)):
        return json.dumps(rounded(value), ensure_ascii=False)
    return "" if value is None else str(value)


def seconds_text(seconds: float) -> str:
    """"0.4 s", "45 s", "1 min 13 s", "2 h 05 min", "3 d 04 h"."""
    if round(seconds, 1) < 10:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    if whole < 86400:
        return f"{whole // 3600} h {whole % 3600 // 60:02d} min"
    return f"{whole // 86400} d {whole % 86400 // 3600:02d} h"


def ago_text(moment: datetime, now: datetime | None = None) -> str:
    seconds = ((now or datetime.now(timezone.utc)) - moment).total_seconds()
    if seconds < 0:
        return "in " + seconds_text(-seconds)
    if seconds < 5:
        return "just now"
    if seconds < 60:
        return f"{int(seconds)} s ago"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    return seconds_text(seconds) + " ago"


def exact(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def when(moment: datetime | None) -> Markup:
    """<time> with the relative time, the exact one (UTC, whole seconds) on hover; "-" for none."""
    if isinstance(moment, str):  # an ISO time from a JSON shape
        moment = datetime.fromisoformat(moment)
    moment = as_utc(moment)
    if moment is None:
        return Markup("-")
    return Markup('<time datetime="{}" title="{}">{}</time>').format(iso(moment), exact(moment), ago_text(moment))


def run_time(job) -> str:
    """"took 1 min 13 s" for a finished job, "running for 12 s" while it runs, "" before it has run."""
    started = as_utc(job.started_at)
    if started is None:
        return ""
    status = JobStatus(job.status)
    if status is JobStatus.RUNNING:
        return "running for " + seconds_text(max((datetime.now(timezone.utc) - started).total_seconds(), 0))
    finished = as_utc(job.finished_at)
    if finished is None:
        return ""
    return "took " + seconds_text(max((finished - started).total_seconds(), 0))


def filters() -> dict:
    return {"number": number, "when": when, "run_time": run_time, "seconds": seconds_text,
            "exact": lambda moment: exact(as_utc(moment)) if moment else "-", "escape": escape}

"""`client group GROUP`: a sweep's jobs as one table, and its comparison report (--report DIR).

The table has one column per swept parameter, the status, the seconds each job ran and the kind's
result figures (genq.core.reads.sweep_table); the report is table.csv and the figures the kind declares
(JobParams.report_figures), each drawn from a GroupView of the group.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from genq.client.render import echo_json, iso, webhook_summary
from genq.client.runtime import Runtime, pass_runtime
from genq.client.visible import visible
from genq.client.waiting import EXIT_TIMEOUT, TerminalLine
from genq.core.kinds import KINDS, kind_class, report_figure
from genq.core.polling import StillWaiting
from genq.core.store.states import JobStatus

if TYPE_CHECKING:
    from genq.core.report import GroupView

CELL_TEXT = 24  # characters of a table cell (prompts are long)


def group_summary(group) -> dict[str, Any]:
    """The group as JSON: who it is, what was swept, counts by state and its jobs' table."""
    rows = group.rows()
    return {"id": group.id, "name": group.name, "kind": group.kind, "size": group.size,
            "created_at": iso(group.created_at), "definition": group.definition, "swept": group.swept,
            "counts": state_counts(rows), "jobs": group_rows(group, rows),
            "webhooks": [webhook_summary(*delivery) for delivery in group.client.reads.webhooks(group_id=group.id)]}


def group_rows(group, rows=None) -> list[dict[str, Any]]:
    """The group's table (genq.api.Group); `rows`: its jobs, when read already."""
    return group.client.reads.group_table(group.id, rows)


def state_counts(rows) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    return dict(sorted(counts.items()))


def wait_for_group(group, timeout: float | None, show_progress: bool = True) -> None:
    """Until every job of the group has finished; a bar of jobs done on a terminal; exit 3 on timeout."""
    line = TerminalLine(show_progress)

    def done(counts: dict[str, int]) -> int:
        return sum(n for status, n in counts.items() if JobStatus(status).finished)

    try:
        group.client.follow_group(group, timeout,
                                  on_change=lambda counts: line.show(progress_bar(done(counts), group.size, counts)))
    except StillWaiting as exc:
        line.end()
        click.echo(f"group {group.id}: {done(exc.last)} of {group.size} jobs finished after {timeout:g}s", err=True)
        raise SystemExit(EXIT_TIMEOUT) from None
    line.end()


def progress_bar(done: int, total: int, counts: dict[str, int], width: int = 30) -> str:
    filled = int(width * done / total) if total else width
    states = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    return f"[{'#' * filled}{'-' * (width - filled)}] {done}/{total} jobs done ({states})"


def table_text(rows: list[dict[str, Any]]) -> str:
    """Fixed-width columns; ids shortened to 8 characters, long text cut with an ellipsis."""
    if not rows:
        return "(no jobs)"
    columns = list(rows[0])
    cells = [[cell_text(column, row[column]) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)]
    lines = ["  ".join(column.upper().ljust(width) for column, width in zip(columns, widths))]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)) for line in cells]
    return "\n".join(visible(line.rstrip()) for line in lines)


def cell_text(column: str, value: Any) -> str:
    if value is None:
        return "-"
    if column == "id":
        return str(value)[:8]
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    return text if len(text) <= CELL_TEXT else text[:CELL_TEXT - 1] + "…"


# -- the report -------------------------------------------------------------------------------
def write_report(group, folder: Path) -> list[Path]:
    """table.csv, and the figures the group's kind declares (JobParams.report_figures) that have something
    to draw; returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [write_csv(group_rows(group), folder / "table.csv")]
    names = report_figure_names(group)
    view = group_view(group) if names else None
    for name in names:
        png = report_figure(group.kind, name)(view)
        if png is not None:
            (folder / name).write_bytes(png)
            written.append(folder / name)
    return written


def write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def report_figure_names(group) -> list[str]:
    """The figures the group's kind declares; none when that kind is not installed here."""
    cls = KINDS.get(group.kind)
    return list(cls.report_figures) if cls is not None else []


def report_figure_png(group, name: str) -> bytes | None:
    """One report figure of the group (as `client group --report` draws it), or None."""
    if name not in report_figure_names(group):
        return None
    return report_figure(group.kind, name)(group_view(group))


def group_view(group) -> GroupView:
    """The group as its kind's report figures see it; metrics and pictures are read when asked for."""
    from genq.api import Job, NotFound
    from genq.core.report import GroupView

    rows = group.rows()
    picture_name = kind_class(group.kind).main_picture

    def picture(job_id: str):
        if picture_name is None:
            return None
        try:
            return Job(group.client, job_id).artifact(picture_name).image()
        except (NotFound, OSError, ValueError):
            return None  # not written, gone from the store, or not an image

    return GroupView(title=group.name or group.id[:8], swept=group.swept, table=group_rows(group, rows),
                     params={row.id: row.params for row in rows},
                     metrics=lambda job_id: Job(group.client, job_id).metrics(), picture=picture)


@click.command("group")
@click.argument("group_ref", metavar="GROUP")
@click.option("--json", "as_json", is_flag=True, help="Print the group and its jobs as a JSON object.")
@click.option("--report", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="DIR",
              help="Write a comparison into DIR: table.csv, and the figures the group's kind draws "
                   "(see README, `client group`).")
@pass_runtime
def group_command(rt: Runtime, group_ref: str, as_json: bool, report: Path | None) -> None:
    """A group's jobs (one per point of its sweep) as one table, with counts by state.

    GROUP is the group's name, its id, or the start of its id.
    """
    group = rt.group(group_ref)
    summary = group_summary(group)
    if report is not None:
        try:
            written = write_report(group, report)
        except OSError as exc:
            raise click.ClickException(visible(f"cannot write the report into {report}: {exc}")) from exc
        summary["report"] = [str(path) for path in written]
    if as_json:
        echo_json(summary)
        return
    click.echo(visible(f"group {group.id}" + (f" ({group.name})" if group.name else "") +
                       f": {group.size} {group.kind} jobs, " +
                       ", ".join(f"{n} {status}" for status, n in summary["counts"].items())))
    click.echo(table_text(summary["jobs"]))
    for path in summary.get("report", []):
        click.echo(visible(f"wrote {path}"))

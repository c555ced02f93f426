"""`client group GROUP`: a sweep's jobs as one table, and its comparison report (--report DIR).

The table has one column per swept parameter, the status, the seconds each job ran and the kind's
result figures (genq.api.group_table); the report draws what a sweep is for: for `train-vae`, every
job's loss curve on one chart and the final test loss against each swept parameter; for `sd`, one
labelled grid of images with prompts as rows and the other swept values as columns.
"""
from __future__ import annotations

import csv
import io
import sys
import time
from pathlib import Path
from typing import Any

import click

from genq.client.render import echo_json, iso
from genq.client.runtime import Runtime, pass_runtime
from genq.client.visible import visible
from genq.client.waiting import EXIT_TIMEOUT, POLL_INTERVAL_S
from genq.core.store.states import JobStatus

TRAIN_CURVE = "train_loss_per_image"  # the metric train-vae records per epoch
FINAL_LOSS = "test_loss_per_image"
CELL_TEXT = 24  # characters of a table cell (prompts are long)


def group_summary(group) -> dict[str, Any]:
    """The group as JSON: who it is, what was swept, counts by state and its jobs' table."""
    rows = group.rows()
    return {"id": group.id, "name": group.name, "kind": group.kind, "size": group.size,
            "created_at": iso(group.created_at), "definition": group.definition, "swept": group.swept,
            "counts": state_counts(rows), "jobs": group_rows(group, rows)}


def group_rows(group, rows=None) -> list[dict[str, Any]]:
    from genq.api import group_table
    from genq.core.kinds import kind_class

    return group_table(group.rows() if rows is None else rows, group.swept, kind_class(group.kind).summary)


def state_counts(rows) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    return dict(sorted(counts.items()))


def wait_for_group(group, timeout: float | None, show_progress: bool = True) -> None:
    """Until every job of the group has finished; a bar of jobs done on a terminal; exit 3 on timeout."""
    deadline = None if timeout is None else time.monotonic() + timeout
    tty = show_progress and sys.stderr.isatty()
    last = None
    while True:
        counts = group.counts()
        done = sum(n for status, n in counts.items() if JobStatus(status).finished)
        if tty:
            line = progress_bar(done, group.size, counts)
            if line != last:
                click.echo("\r\033[K" + line, err=True, nl=False)
                last = line
        if done == group.size:
            if tty:
                click.echo("", err=True)
            return
        if deadline is not None and time.monotonic() >= deadline:
            if tty:
                click.echo("", err=True)
            click.echo(f"group {group.id}: {done} of {group.size} jobs finished after {timeout:g}s", err=True)
            raise SystemExit(EXIT_TIMEOUT)
        time.sleep(POLL_INTERVAL_S)


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
    """The comparison files for the group's kind, and table.csv for any kind; returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [write_csv(group_rows(group), folder / "table.csv")]
    if group.kind == "train-vae":
        written += train_vae_report(group, folder)
    elif group.kind == "sd":
        written += sd_report(group, folder)
    return written


def write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def point_label(point: dict[str, Any], names) -> str:
    return ", ".join(f"{name}={point.get(name)}" for name in names) or "all"


def train_vae_report(group, folder: Path) -> list[Path]:
    from genq.core.report import loss_curves_png, metric_against_params_png

    swept = group.swept
    curves, rows = [], []
    for job, row in zip(group.jobs, group_rows(group)):
        points = job.metrics().get(TRAIN_CURVE, [])
        if points:
            curves.append((point_label(row, swept), points))
        rows.append(row)
    written = []
    if curves:
        path = folder / "loss-curves.png"
        path.write_bytes(loss_curves_png(curves, title=f"{group.name or group.id[:8]}: training loss per image",
                                         xlabel="epoch", ylabel="train loss per image"))
        written.append(path)
    if swept and any(row.get(FINAL_LOSS) is not None for row in rows):
        path = folder / "final-loss.png"
        path.write_bytes(metric_against_params_png(rows, swept, FINAL_LOSS,
                                                   title=f"{group.name or group.id[:8]}: final test loss per image"))
        written.append(path)
    return written


def sd_report(group, folder: Path) -> list[Path]:
    """One grid: a row per prompt, a column per combination of the other swept values (image 0 of each job)."""
    from genq.core.report import labelled_image_grid_png

    swept = group.swept
    row_names = [name for name in ("prompt", "negative") if name in swept]
    column_names = [name for name in swept if name not in row_names]
    row_keys: dict[str, int] = {}
    column_keys: dict[str, int] = {}
    images: dict[tuple[int, int], Any] = {}
    for job, row in zip(group.jobs, group_rows(group)):
        row_label = " | ".join(str(row[name]) for name in row_names) if row_names else str(job.params.get("prompt"))
        r = row_keys.setdefault(row_label, len(row_keys))  # "prompt | negative", as a prompt file writes it
        c = column_keys.setdefault(point_label(row, column_names), len(column_keys))
        if row["status"] == JobStatus.SUCCEEDED.value:
            try:
                images[(r, c)] = job.artifact("image-0.png").image()
            except (LookupError, OSError):
                pass  # a missing image stays a gray cell
    if not images:
        return []
    cells = [[images.get((r, c)) for c in range(len(column_keys))] for r in range(len(row_keys))]
    path = folder / "grid.png"
    path.write_bytes(labelled_image_grid_png(cells, list(row_keys), list(column_keys), title=group.name or group.id[:8]))
    return [path]


@click.command("group")
@click.argument("group_ref", metavar="GROUP")
@click.option("--json", "as_json", is_flag=True, help="Print the group and its jobs as a JSON object.")
@click.option("--report", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="DIR",
              help="Write a comparison into DIR: table.csv, and for train-vae loss-curves.png and final-loss.png, "
                   "for sd grid.png (prompts as rows, the other swept values as columns).")
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

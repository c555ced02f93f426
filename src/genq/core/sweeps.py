"""Sweeps: one job per point of the Cartesian product of some parameters' values.

`--sweep beta=0.5,1,2,4 --sweep latent=8,16` is eight points; `--sweep seed=1..8` is the integers
1 to 8. A prompt file (one `prompt` or `prompt | negative` per line) is a sweep over prompts.
Values stay as given (text from the command line, Python values from the API); each point is
validated by its kind's declaration like a single submit, before anything is stored.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from genq.core.config import MAX_SWEEP_CEILING
from genq.core.params import text_problem

RANGE = re.compile(r"^\s*(-?\d+)\s*\.\.\s*(-?\d+)\s*$")
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
PROMPT_SEPARATOR = "|"
MAX_RANGE = 100_000  # `seed=1..10**9` is a typo, not a sweep: refused before it is expanded


class SweepError(ValueError):
    """A sweep that cannot be expanded: its text, a parameter given twice, an empty list."""


@dataclass(frozen=True)
class Sweep:
    """The parameters fixed for every job, and those swept, in the order given (the first varies slowest)."""

    fixed: Mapping[str, Any]
    swept: Mapping[str, Sequence[Any]]

    @property
    def size(self) -> int:
        size = 1
        for values in self.swept.values():
            size *= len(values)
        return size

    def points(self) -> list[dict[str, Any]]:
        """Each job's swept values, in submission order (an axis whose values are mappings, such as
        a prompt file's prompt and negative, sets several parameters at once)."""
        points = []
        for combination in itertools.product(*self.swept.values()):
            point: dict[str, Any] = {}
            for name, value in zip(self.swept, combination):
                point.update(value if isinstance(value, Mapping) else {name: value})
            points.append(point)
        return points

    def definition(self) -> dict[str, Any]:
        """What a group stores of it (JSON)."""
        return {"fixed": dict(self.fixed), "swept": {name: list(values) for name, values in self.swept.items()}}


def field_name(name: str) -> str:
    """`num-images` as the command line spells it, `num_images` as the declaration does."""
    return name.strip().replace("-", "_")


def parse_sweep_option(text: str) -> tuple[str, list[str]]:
    """`NAME=V1,V2,...` or `NAME=A..B` (the integers A to B) -> (parameter, values as text)."""
    name, equals, values = text.partition("=")
    if not equals or not NAME.match(name.strip()):
        raise SweepError(f"{text!r}: give NAME=V1,V2,... or NAME=A..B (integers A to B)")
    name = field_name(name)
    if match := RANGE.match(values):
        return name, [str(value) for value in integer_range(int(match[1]), int(match[2]), name)]
    items = [value.strip() for value in values.split(",")]
    if not values.strip() or any(value == "" for value in items):
        raise SweepError(f"{name}: an empty value in {values!r}")
    return name, items


def integer_range(first: int, last: int, name: str) -> range:
    if last < first:
        raise SweepError(f"{name}: the range {first}..{last} is empty (the first value is larger than the last)")
    if last - first + 1 > MAX_RANGE:
        raise SweepError(f"{name}: the range {first}..{last} has more than {MAX_RANGE:,} values")
    return range(first, last + 1)


def read_prompt_file(path: Path) -> list[dict[str, str]]:
    """One prompt per line, `prompt | negative` for a negative prompt (a line without one keeps
    --negative); blank lines and `#` lines are skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SweepError(f"cannot read the prompt file {path}: {exc}") from None
    prompts = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if problem := text_problem(line):
            raise SweepError(f"{path}, line {number}: {problem}")
        prompt, separator, negative = line.partition(PROMPT_SEPARATOR)
        if not prompt.strip():
            raise SweepError(f"{path}, line {number}: no prompt before {PROMPT_SEPARATOR!r}")
        prompts.append({"prompt": prompt.strip(), **({"negative": negative.strip()} if negative.strip() else {})})
    if not prompts:
        raise SweepError(f"the prompt file {path} has no prompts")
    return prompts


def build(fixed: Mapping[str, Any], swept: Iterable[tuple[str, Sequence[Any]]]) -> Sweep:
    """A sweep from fixed values and (parameter, values) pairs; a parameter may be given once. A range
    stays a range: its length is known without listing it (check_size)."""
    fixed = {field_name(name): value for name, value in fixed.items() if value is not None}
    axes: dict[str, Sequence[Any]] = {}
    for name, values in swept:
        name = field_name(name)
        if name in axes:
            raise SweepError(f"{name} is swept twice")
        values = values if isinstance(values, range) else list(values)
        if not values:
            raise SweepError(f"{name}: no values to sweep")
        if name in fixed:
            raise SweepError(f"{name} is given once and swept: give one or the other")
        axes[name] = values
    return Sweep(fixed=fixed, swept=axes)


def check_size(sweep: Sweep, limit: int, confirmed: bool) -> None:
    """Before any point is made: past `limit` jobs only when confirmed, never past MAX_SWEEP_CEILING."""
    if sweep.size > limit and not confirmed:
        raise SweepError(f"this sweep is {sweep.size:,} jobs, more than GENQ_MAX_SWEEP ({limit:,}); "
                         "add --yes to submit it anyway")
    if sweep.size > MAX_SWEEP_CEILING:
        raise SweepError(f"this sweep is {sweep.size:,} jobs, more than genq submits as one sweep "
                         f"({MAX_SWEEP_CEILING:,}), even with --yes: split it")

"""One frozen, validated spec per job kind, shared by the client and the worker.

A spec is plain JSON (`to_params` / `spec_from_params`); validation happens in
`__post_init__`, so a spec that exists is a spec that is valid. Errors are one line
that says what was wrong and what is allowed.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

MNIST_TEST_SIZE = 10_000
SD_SCHEDULERS = ("dpm++", "ddim", "euler", "euler-a", "pndm")
SD_MAX_STEPS = 150
SD_MAX_IMAGES = 16
SD_MIN_SIDE, SD_MAX_SIDE = 64, 2048
MAX_SEED = 2**32 - 1


class SpecError(ValueError):
    """A job's parameters are invalid; the message is one line meant for the user."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise SpecError(message)


def _check_int(name: str, value: Any) -> None:
    _require(isinstance(value, int) and not isinstance(value, bool), f"{name} must be an integer, got {value!r}")


def _check_number(name: str, value: Any) -> None:
    _require(isinstance(value, (int, float)) and not isinstance(value, bool), f"{name} must be a number, got {value!r}")


def _check_seed(value: Any) -> None:
    if value is not None:
        _check_int("seed", value)
        _require(0 <= value <= MAX_SEED, f"seed must be between 0 and {MAX_SEED}, got {value}")


@dataclass(frozen=True)
class TrainVAESpec:
    """The seed's convolutional VAE on MNIST; defaults are the seed's configuration."""

    kind: ClassVar[str] = "train-vae"
    latent_dims: int = 2
    capacity: int = 64
    beta: float = 1.0
    lr: float = 1e-3
    weight_decay: float = 1e-5
    batch_size: int = 128
    epochs: int = 30
    train_limit: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("latent_dims", "capacity", "batch_size", "epochs"):
            _check_int(name, getattr(self, name))
            _require(getattr(self, name) >= 1, f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("beta", "lr", "weight_decay"):
            _check_number(name, getattr(self, name))
        _require(self.beta >= 0, f"beta must be >= 0, got {self.beta}")
        _require(self.lr > 0, f"lr must be > 0, got {self.lr}")
        _require(self.weight_decay >= 0, f"weight-decay must be >= 0, got {self.weight_decay}")
        if self.train_limit is not None:
            _check_int("train_limit", self.train_limit)
            _require(self.train_limit >= 1, f"train-limit must be at least 1, got {self.train_limit}")
        _check_seed(self.seed)


@dataclass(frozen=True)
class InterpolateSpec:
    """Decode lambda*mu1 + (1-lambda)*mu2 between two test images of a trained VAE.

    The images are chosen by test-set index (default 0 and 1) or by digit (the first test
    image of each class, in test-set order); not both.
    """

    kind: ClassVar[str] = "interpolate"
    model_job: str = ""
    from_index: int | None = None
    to_index: int | None = None
    from_digit: int | None = None
    to_digit: int | None = None
    steps: int = 10

    def __post_init__(self) -> None:
        _require(bool(self.model_job), "--model must name a train-vae job")
        by_index = self.from_index is not None or self.to_index is not None
        by_digit = self.from_digit is not None or self.to_digit is not None
        _require(not (by_index and by_digit), "choose the images by --from-index/--to-index or by --from-digit/--to-digit, not both")
        if by_digit:
            _require(self.from_digit is not None and self.to_digit is not None, "--from-digit and --to-digit go together")
            for name in ("from_digit", "to_digit"):
                _check_int(name, getattr(self, name))
                _require(0 <= getattr(self, name) <= 9, f"{name.replace('_', '-')} must be a digit 0-9, got {getattr(self, name)}")
        if by_index:
            _require(self.from_index is not None and self.to_index is not None, "--from-index and --to-index go together")
            for name in ("from_index", "to_index"):
                _check_int(name, getattr(self, name))
                value = getattr(self, name)
                _require(0 <= value < MNIST_TEST_SIZE, f"{name.replace('_', '-')} must be in 0-{MNIST_TEST_SIZE - 1} (the MNIST test set), got {value}")
        _check_int("steps", self.steps)
        _require(self.steps >= 2, f"steps must be at least 2, got {self.steps}")

    @property
    def by_digit(self) -> bool:
        return self.from_digit is not None

    @property
    def indices(self) -> tuple[int, int]:
        """Test-set indices when chosen by index (0 and 1 when nothing was chosen)."""
        if self.from_index is None:
            return 0, 1
        return self.from_index, self.to_index  # type: ignore[return-value]


@dataclass(frozen=True)
class SampleVAESpec:
    """Decode draws from the prior N(0, I) of a trained VAE (plus the 2-D manifold)."""

    kind: ClassVar[str] = "sample-vae"
    model_job: str = ""
    count: int = 64
    seed: int | None = None

    def __post_init__(self) -> None:
        _require(bool(self.model_job), "--model must name a train-vae job")
        _check_int("count", self.count)
        _require(1 <= self.count <= 1024, f"count must be in 1-1024, got {self.count}")
        _check_seed(self.seed)


@dataclass(frozen=True)
class SDSpec:
    """Stable Diffusion text-to-image with an optional negative prompt."""

    kind: ClassVar[str] = "sd"
    prompt: str = ""
    negative: str | None = None
    steps: int = 30
    guidance: float = 7.5
    seed: int | None = None
    width: int = 512
    height: int = 512
    num_images: int = 1
    scheduler: str = "dpm++"
    model: str | None = None

    def __post_init__(self) -> None:
        _require(isinstance(self.prompt, str) and self.prompt.strip() != "", "prompt must not be empty")
        _require(self.negative is None or isinstance(self.negative, str), "negative must be text")
        _check_int("steps", self.steps)
        _require(1 <= self.steps <= SD_MAX_STEPS, f"steps must be in 1-{SD_MAX_STEPS}, got {self.steps}")
        _check_number("guidance", self.guidance)
        _require(self.guidance >= 0, f"guidance must be >= 0, got {self.guidance}")
        for name in ("width", "height"):
            value = getattr(self, name)
            _check_int(name, value)
            _require(
                SD_MIN_SIDE <= value <= SD_MAX_SIDE and value % 8 == 0,
                f"{name} must be a multiple of 8 in {SD_MIN_SIDE}-{SD_MAX_SIDE}, got {value}",
            )
        _check_int("num_images", self.num_images)
        _require(1 <= self.num_images <= SD_MAX_IMAGES, f"num-images must be in 1-{SD_MAX_IMAGES}, got {self.num_images}")
        _require(self.scheduler in SD_SCHEDULERS, f"unknown scheduler {self.scheduler!r}; choose one of {', '.join(SD_SCHEDULERS)}")
        _check_seed(self.seed)


SPECS: dict[str, type] = {cls.kind: cls for cls in (TrainVAESpec, InterpolateSpec, SampleVAESpec, SDSpec)}
Spec = TrainVAESpec | InterpolateSpec | SampleVAESpec | SDSpec


def to_params(spec: Spec) -> dict[str, Any]:
    return dataclasses.asdict(spec)


def spec_from_params(kind: str, params: dict[str, Any]) -> Spec:
    if kind not in SPECS:
        raise SpecError(f"unknown job kind {kind!r}; known kinds: {', '.join(SPECS)}")
    cls = SPECS[kind]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise SpecError(f"unknown parameter(s) for {kind}: {', '.join(unknown)}")
    return cls(**params)

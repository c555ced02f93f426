"""`interpolate`: decode lambda*mu1 + (1-lambda)*mu2 between two MNIST test images of a trained VAE."""
from __future__ import annotations

from pydantic import Field, model_validator

from genq.core.params import JobParams, job_ref

MNIST_TEST_SIZE = 10_000


class Interpolate(JobParams):
    """Decode lambda*mu1 + (1-lambda)*mu2 between two test images of a trained VAE.

    The images are chosen by test-set index (default 0 and 1) or by digit (the first test image
    of each class); not both. mu2 is the `from` image (lambda = 0), mu1 the `to` image (lambda = 1).
    """

    kind = "interpolate"
    run_function = "genq.core.vae.interpolate:run"
    main_picture = "interpolation.png"
    main_results = ("interpolation.png",)

    model: str = job_ref("train-vae", "A train-vae job (this job waits for it if it is unfinished).")
    from_index: int | None = Field(None, ge=0, lt=MNIST_TEST_SIZE, description="Test-set index of the `from` image (lambda = 0).")
    to_index: int | None = Field(None, ge=0, lt=MNIST_TEST_SIZE, description="Test-set index of the `to` image (lambda = 1).")
    from_digit: int | None = Field(None, ge=0, le=9, description="The `from` image is the first test image of this digit.")
    to_digit: int | None = Field(None, ge=0, le=9, description="The `to` image is the first test image of this digit.")
    steps: int = Field(10, ge=2, le=256, description="Frames K (lambda in linspace(0, 1, K)).")

    @model_validator(mode="after")
    def _one_way_to_choose(self) -> "Interpolate":
        by_index = self.from_index is not None or self.to_index is not None
        by_digit = self.from_digit is not None or self.to_digit is not None
        if by_index and by_digit:
            raise ValueError("choose the images by --from-index/--to-index or by --from-digit/--to-digit, not both")
        if by_digit and (self.from_digit is None or self.to_digit is None):
            raise ValueError("--from-digit and --to-digit go together")
        if by_index and (self.from_index is None or self.to_index is None):
            raise ValueError("--from-index and --to-index go together")
        return self

    @property
    def by_digit(self) -> bool:
        return self.from_digit is not None

    @property
    def indices(self) -> tuple[int, int]:
        """(from, to) test-set indices when chosen by index (0 and 1 when nothing was chosen)."""
        if self.from_index is None:
            return 0, 1
        return self.from_index, self.to_index  # type: ignore[return-value]

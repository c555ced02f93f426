"""`sample-vae`: decode draws from a trained VAE's prior N(0, I), and its 2-D manifold."""
from __future__ import annotations

from pydantic import Field

from genq.core.params import JobParams, Seed, job_ref


class SampleVAE(JobParams):
    """Decode draws from the prior of a trained VAE (and its 2-D latent manifold)."""

    kind = "sample-vae"
    run_function = "genq.core.vae.sample:run"
    main_picture = "samples.png"
    main_results = ("samples.png", "manifold.png")

    model: str = job_ref("train-vae", "A train-vae job (this job waits for it if it is unfinished).")
    count: int = Field(64, ge=1, le=1024, description="Number of draws from N(0, I).")
    seed: Seed = None

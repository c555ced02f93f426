from typing import Literal

from pydantic import Field

from genq.core.params import JobParams, Seed


class Echo(JobParams):
    """Say something back (the first line is the command's summary in `client submit --help`)."""

    kind = "echo"                                  # `client submit echo`
    run_function = "genq_echo.echo:run"            # imported only on the worker
    summary = ("length",)                          # result keys a group's table shows

    text: str = Field(max_length=200, description="What to say.")                 # required: no default
    times: int = Field(1, ge=1, le=10, description="How often.")                  # --times, 1..10
    tone: Literal["calm", "loud"] = Field("calm", description="How.")            # a choice
    seed: Seed = None                              # chosen at submit when omitted, and recorded


def run(spec: Echo, ctx) -> dict:
    said = " ".join([spec.text.upper() if spec.tone == "loud" else spec.text] * spec.times)
    ctx.metric(1, "length", len(said))
    ctx.artifact("echo.txt", said.encode(), "text/plain")
    ctx.progress(1, 1, "said it")
    return {"echoed": said, "length": len(said)}   # the job's result (JSON)

"""`client submit KIND` is generated from the kind's declaration: options, help and messages."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Literal

from click.testing import CliRunner
from pydantic import Field

from genq.client.cli import cli
from genq.client.submit import kind_command
from genq.core.kinds import KINDS
from genq.core.params import JobParams


class Echo(JobParams):
    """Say something back (a kind declared in a test, the way the README shows)."""

    kind = "echo"
    run_function = "tests.unit.test_kind_commands:run"

    text: str = Field(max_length=20, description="What to say.")
    times: int = Field(1, ge=1, le=3, description="How often.")
    tone: Literal["calm", "loud"] = Field("calm", description="How.")


def run(spec: Echo, ctx) -> dict:
    return {"said": " ".join([spec.text] * spec.times)}


def test_every_parameter_of_every_kind_is_an_option_with_its_help():
    for kind, cls in KINDS.items():
        result = CliRunner().invoke(cli, ["submit", kind, "--help"])
        assert result.exit_code == 0, result.output
        flat = " ".join(result.output.split())
        for name, field in cls.model_fields.items():
            assert "--" + name.replace("_", "-") in flat
            assert " ".join(field.description.split()[:3]) in flat, (kind, name)


def test_defaults_and_ranges_come_from_the_declaration():
    flat = " ".join(CliRunner().invoke(cli, ["submit", "sd", "--help"]).output.split())
    assert "Denoising steps. [1..150] [default: 30]" in flat
    assert "[64..2048, multiple of 8] [default: 512]" in flat
    assert "[dpm++|ddim|euler|euler-a|pndm]" in flat


def test_a_new_kind_gets_a_command_whose_errors_are_the_declarations(tmp_path, monkeypatch):
    monkeypatch.setenv("GENQ_HOME", str(tmp_path))
    command = kind_command(Echo)
    help_text = " ".join(CliRunner().invoke(command, ["--help"]).output.split())
    assert "--text TEXT What to say. [required, or swept]" in help_text and "--tone [calm|loud]" in help_text
    assert "How often. [1..3] [default: 1]" in help_text
    for args, words in ((["--text", "hi", "--times", "4"], "--times: input should be less than or equal to 3"),
                        (["--text", "x" * 21], "--text: string should have at most 20 characters"),
                        (["--times", "2"], "--text"),
                        (["--text", "hi", "--tone", "shrill"], "'shrill' is not one of 'calm', 'loud'")):
        result = CliRunner().invoke(command, args)
        assert result.exit_code == 2 and words in result.output, (args, result.output)
    assert not (tmp_path / "genq.sqlite3").exists()  # refused before the store was opened


def test_genq_is_the_same_command_as_client():
    bin_dir = Path(sys.executable).parent
    outputs = [subprocess.run([str(bin_dir / name), "submit", "--help"], capture_output=True, text=True, check=True).stdout
               for name in ("client", "genq")]
    assert outputs[0].replace("client submit", "genq submit") == outputs[1] and "train-vae" in outputs[0]


def test_the_readme_example_kind_works(tmp_path, monkeypatch):
    """The README's "Adding a job kind" module: its command validates, and its run function runs."""
    import importlib.util
    import json as json_module

    from genq.core.context import LocalContext

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Adding a job kind", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    module_path = tmp_path / "echo_kind.py"
    module_path.write_text(code)
    spec = importlib.util.spec_from_file_location("echo_kind", module_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setenv("GENQ_HOME", str(tmp_path))

    result = CliRunner().invoke(kind_command(module.Echo), ["--text", "hi", "--times", "11"])
    assert result.exit_code == 2 and "--times" in result.output
    params = module.Echo(text="hi", times=2).with_seed()
    assert json_module.loads(json_module.dumps(params.to_json()))["seed"] == params.seed
    ctx = LocalContext(tmp_path, job_id="echo")
    assert module.run(params, ctx) == {"echoed": "hi hi", "length": 5}
    assert (tmp_path / "echo" / "echo.txt").read_text() == "hi hi"
    assert ctx.metrics == {(1, "length"): 5.0}

"""Sweep texts, products, prompt files and size limits (genq.core.sweeps)."""
from __future__ import annotations

import pytest

from genq.core import sweeps
from genq.core.sweeps import SweepError


def test_a_list_and_an_integer_range_parse_to_their_values():
    assert sweeps.parse_sweep_option("beta=0.5, 1,2,4") == ("beta", ["0.5", "1", "2", "4"])
    assert sweeps.parse_sweep_option("seed=1..4") == ("seed", ["1", "2", "3", "4"])
    assert sweeps.parse_sweep_option("seed=-1..1") == ("seed", ["-1", "0", "1"])
    assert sweeps.parse_sweep_option("num-images=1") == ("num_images", ["1"])


@pytest.mark.parametrize("text, says", [
    ("beta", "NAME=V1,V2"), ("=1,2", "NAME=V1,V2"), ("beta=", "empty value"), ("beta=1,,2", "empty value"),
    ("seed=5..1", "is empty"), ("seed=1..1000000000", "more than"), ("2beta=1", "NAME=V1,V2"),
])
def test_a_malformed_sweep_is_refused_with_what_is_wrong(text, says):
    with pytest.raises(SweepError, match=says):
        sweeps.parse_sweep_option(text)


def test_points_are_the_product_with_the_first_sweep_varying_slowest():
    sweep = sweeps.build({"epochs": 2, "capacity": None}, [("beta", [0.5, 1]), ("latent-dims", [8, 16, 32])])
    assert sweep.fixed == {"epochs": 2}
    assert sweep.size == 6
    assert sweep.points() == [{"beta": b, "latent_dims": d} for b in (0.5, 1) for d in (8, 16, 32)]
    assert sweep.definition() == {"fixed": {"epochs": 2}, "swept": {"beta": [0.5, 1], "latent_dims": [8, 16, 32]}}


def test_a_parameter_swept_twice_or_also_given_once_is_refused():
    with pytest.raises(SweepError, match="swept twice"):
        sweeps.build({}, [("beta", [1]), ("beta", [2])])
    with pytest.raises(SweepError, match="given once and swept"):
        sweeps.build({"beta": 1}, [("beta", [2, 3])])
    with pytest.raises(SweepError, match="no values"):
        sweeps.build({}, [("beta", [])])


def test_a_prompt_file_gives_prompts_with_their_own_negatives(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("a red bicycle | blurry, low quality\n\n# a comment\n  a lighthouse at dusk  \nsnow |  \n")
    prompts = sweeps.read_prompt_file(path)
    assert prompts == [{"prompt": "a red bicycle", "negative": "blurry, low quality"},
                       {"prompt": "a lighthouse at dusk"}, {"prompt": "snow"}]
    # An axis of mappings sets several parameters at once; a line without a negative keeps the fixed one
    sweep = sweeps.build({"negative": "ugly"}, [("prompt", prompts), ("seed", [1, 2])])
    points = sweep.points()
    assert len(points) == 6
    assert points[0] == {"prompt": "a red bicycle", "negative": "blurry, low quality", "seed": 1}
    assert points[3] == {"prompt": "a lighthouse at dusk", "seed": 2}


@pytest.mark.parametrize("text, says", [("", "has no prompts"), ("# only a comment\n", "has no prompts"),
                                        ("fine\n | blurry\n", "line 2: no prompt")])
def test_a_prompt_file_without_prompts_is_refused(tmp_path, text, says):
    path = tmp_path / "prompts.txt"
    path.write_text(text)
    with pytest.raises(SweepError, match=says):
        sweeps.read_prompt_file(path)


def test_a_missing_prompt_file_is_refused(tmp_path):
    with pytest.raises(SweepError, match="cannot read the prompt file"):
        sweeps.read_prompt_file(tmp_path / "nope.txt")


def test_a_sweep_above_the_limit_needs_confirming():
    sweep = sweeps.build({}, [("seed", range(11))])
    with pytest.raises(SweepError, match="11 jobs, more than GENQ_MAX_SWEEP \\(10\\)"):
        sweeps.check_size(sweep, 10, confirmed=False)
    sweeps.check_size(sweep, 10, confirmed=True)
    sweeps.check_size(sweep, 11, confirmed=False)


def test_a_sweep_is_measured_before_anything_is_expanded():
    # 10**12 points: listing the range alone would be 8 TB; its length is known without listing it
    sweep = sweeps.build({}, [("seed", range(10**12)), ("beta", [0.5, 1])])
    assert sweep.size == 2 * 10**12
    with pytest.raises(SweepError, match="2,000,000,000,000 jobs, more than GENQ_MAX_SWEEP"):
        sweeps.check_size(sweep, 1000, confirmed=False)
    with pytest.raises(SweepError, match=f"more than genq submits as one sweep \\({sweeps.MAX_SWEEP_CEILING:,}\\), even with --yes"):
        sweeps.check_size(sweep, 1000, confirmed=True)
    sweeps.check_size(sweeps.build({}, [("seed", range(sweeps.MAX_SWEEP_CEILING))]), 10, confirmed=True)


def test_the_python_api_refuses_a_huge_range_at_once(tmp_path):
    from genq.api import Client
    from genq.core.config import load_settings
    from genq.core.params import SpecError

    client = Client(load_settings({"GENQ_HOME": str(tmp_path)}))  # refused before the store is opened
    with pytest.raises(SpecError, match="1,000,000,000,000 jobs, more than GENQ_MAX_SWEEP \\(1,000\\)"):
        client.sweep("train-vae", seed=range(10**12))
    with pytest.raises(SpecError, match="even with --yes"):
        client.sweep("train-vae", seed=range(10**12), confirm=True)
    assert not (tmp_path / "genq.sqlite3").exists()


def test_a_prompt_file_line_with_a_nul_is_refused_with_its_number(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("a red bicycle\n# a comment\na light\x00house | blurry\n")
    with pytest.raises(SweepError, match="prompts.txt, line 3: must not contain the NUL character \\(U\\+0000\\)"):
        sweeps.read_prompt_file(path)

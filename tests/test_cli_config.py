"""What ``edgecache`` says about the configuration it is given: a file it cannot use (not UTF-8, not
TOML, refused by validation, missing) is reported in one line with exit code 1 by ``serve`` and by
the commands that open the control database alike, never with a traceback; and the layout
``serve``'s banner names for each ``[runtime]`` (decision 0026)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgecache.cli import app, layout
from edgecache.config import Config

COMMANDS = [["serve", "--config"], ["db", "current", "--config"]]


def run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.output


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_a_config_file_that_is_not_utf8_is_reported_not_raised(command: list[str], tmp_path: Path) -> None:
    config = tmp_path / "edgecache.toml"
    config.write_bytes(b'data_dir = "caf\xe9"\n')
    code, output = run([*command, str(config)])
    assert code == 1
    assert f"error: invalid configuration {config}: 'utf-8' codec can't decode" in output
    assert "Traceback" not in output


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize(
    ("text", "says"),
    [("[runtime\n", "invalid configuration"), ("[runtime]\nworkers = 0\n", "greater than or equal to 1")],
    ids=["not-toml", "invalid"],
)
def test_a_bad_config_exits_1_from_every_command(
    command: list[str], text: str, says: str, tmp_path: Path
) -> None:
    config = tmp_path / "edgecache.toml"
    config.write_text(text)
    code, output = run([*command, str(config)])
    assert code == 1 and says in output and "Traceback" not in output
    code, output = run([*command, str(tmp_path / "missing.toml")])
    assert code == 1 and "error: cannot read the configuration" in output


def test_the_banner_names_each_layout() -> None:
    def of(runtime: dict[str, object]) -> str:
        return layout(Config.model_validate({"runtime": runtime}))

    assert of({"workers": 1}) == "one process runs the data and control planes"
    assert of({"control_plane": "inline"}) == "one process runs the data and control planes"
    assert of({"workers": 1, "control_plane": "process"}) == (
        "control plane in the supervisor process, 1 data-plane worker process"
    )
    assert of({"workers": 3}) == "control plane in the supervisor process, 3 data-plane worker processes"

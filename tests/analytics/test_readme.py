"""The README's Stage analytics section: its commands and options exist, its picture is there."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from typer.testing import CliRunner

from stagewatch.cli import app

ROOT = Path(__file__).resolve().parents[2]
SECTION = (ROOT / "README.md").read_text().split("## Stage analytics\n")[1].split("\n## ")[0]


def test_every_command_and_option_in_the_section_exists():
    block = SECTION.split("```bash\n")[1].split("```")[0]
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert [c.split()[1] for c in commands] == ["stays", "funnel", "stuck", "browse"]
    for command in commands:
        words = shlex.split(command.replace("[", "").replace("]", ""))
        help_text = CliRunner().invoke(app, [words[1], "--help"], terminal_width=200).output
        for option in (w for w in words if w.startswith("--")):
            assert option in help_text, (command, option)


def test_the_picture_is_committed():
    (picture,) = re.findall(r"!\[[^]]*\]\(([^)]+\.png)\)", SECTION)
    assert (ROOT / picture).stat().st_size > 10_000

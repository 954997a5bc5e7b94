from typer.testing import CliRunner

from stagewatch import __version__
from stagewatch.cli import app


def test_version_command_prints_package_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"stagewatch {__version__}"

import subprocess
import sys

from mugv.apps.cli import DISTRIBUTIONS, installed_versions, main


def test_version_lists_every_distribution(capsys):
    try:
        main(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    for name in DISTRIBUTIONS:
        assert name in out
    assert all(v is not None for v in installed_versions().values()), out
    assert "not installed" not in out


def test_console_script_help():
    result = subprocess.run(
        [sys.executable, "-m", "mugv.apps.cli", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "usage: mugv" in result.stdout

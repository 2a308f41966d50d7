import subprocess
import sys

from rn50 import __version__
from tests.conftest import run_cli


def test_help_lists_commands():
    res = run_cli(["--help"])
    assert res.exit_code == 0
    for cmd in ("train", "export", "bench", "data", "recipes"):
        assert cmd in res.stdout


def test_version_via_python_m():
    out = subprocess.run([sys.executable, "-m", "rn50", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"rn50 {__version__}"

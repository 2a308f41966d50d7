"""The CLI's face loads no torch. (The import graph's layers and cycles are import-linter's contracts in pyproject.toml,
run by `make test`.)"""

import subprocess
import sys

import rn50


def test_help_and_recipes_do_not_import_torch():
    code = (
        "import sys\nfrom rn50.cli import main\n"
        "for argv in (['--help'], ['recipes'], ['recipes', 'sample-cpu']):\n"
        "    try:\n        main(argv)\n    except SystemExit as e:\n        assert not e.code, e.code\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert 'openvino' not in sys.modules and 'nncf' not in sys.modules, 'openvino imported'\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]


def test_version_from_package_metadata():
    from importlib import metadata

    from rn50.version import __version__

    assert rn50.__version__ == __version__ == metadata.version("rn50")

"""The installed distribution's version: one place, read from the package metadata (pyproject's `version`)."""

from importlib import metadata

try:
    __version__ = metadata.version("rn50")
except metadata.PackageNotFoundError:  # a source tree on sys.path without `pip install -e .`
    __version__ = "0+unknown"

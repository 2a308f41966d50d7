"""Do the installed packages satisfy pyproject.toml? The image build (Dockerfile) runs it after `pip check`:

    python docker/check_pins.py dali trt onnx sample triton     # extras to check besides the base dependencies

`pip check` covers rn50's own dependencies even when rn50 was installed with --no-deps, but not its extras. This
checks the base dependencies and every named extra (with the extras of those, e.g. tritonclient[grpc]) against what
is installed, pre-releases included (NGC's torch is 2.12.0a0+...), taking onnxruntime-gpu for onnxruntime. Prints
what it found; exit 1 with one line per requirement not met.
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata
from pathlib import Path

import tomllib
from packaging.requirements import Requirement

SAME_PACKAGE = {"onnxruntime": ("onnxruntime", "onnxruntime-gpu")}  # the GPU build satisfies the CPU one's pin


def check(requirement: Requirement, found: list[str], problems: list[str]) -> None:
    for name in SAME_PACKAGE.get(requirement.name, (requirement.name,)):
        try:
            version = metadata.version(name)
            break
        except metadata.PackageNotFoundError:
            continue
    else:
        problems.append(f"{requirement.name}: not installed (pyproject.toml asks for {requirement})")
        return
    if not requirement.specifier.contains(version, prereleases=True):
        problems.append(f"{name} {version} does not satisfy pyproject.toml's {requirement}")
        return
    found.append(f"{name} {version}")
    for extra in requirement.extras:  # e.g. tritonclient[grpc]: the packages that extra brings
        for text in metadata.requires(name) or []:
            sub = Requirement(text)
            if sub.marker is not None and sub.marker.evaluate({"extra": extra}):
                check(Requirement(str(sub).split(";")[0]), found, problems)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("extras", nargs="*")
    p.add_argument("--pyproject", type=Path, default=Path(__file__).resolve().parents[1] / "pyproject.toml")
    args = p.parse_args(argv)
    project = tomllib.loads(args.pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in args.extras if e not in optional]
    if unknown:
        print(f"unknown extra {', '.join(unknown)}; pyproject.toml has {', '.join(optional)}", file=sys.stderr)
        return 2
    found: list[str] = []
    problems: list[str] = []
    for text in [*project["dependencies"], *(r for e in args.extras for r in optional[e])]:
        requirement = Requirement(text)
        if requirement.name != project["name"]:  # `dev` names rn50's own extras
            check(requirement, found, problems)
    print("installed: " + ", ".join(found))
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The house rules a newcomer relies on: no file in rn50/ over 400 lines, no function body over 80 (signature and
docstring aside), and every hop docs/architecture.md names exists in the code."""

import ast
import importlib
import re
from pathlib import Path

import rn50

PACKAGE = Path(rn50.__file__).parent
MAX_FILE_LINES = 400
MAX_BODY_LINES = 80
# Function bodies allowed past the limit, each with its reason. Keep it short.
LONG_BODIES: dict[str, str] = {}


def body_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = fn.body
    if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and len(body) > 1:
        body = body[1:]  # the docstring
    return fn.end_lineno - body[0].lineno + 1


def test_no_file_over_400_lines():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES
    }
    assert not long, long


def test_no_function_body_over_80_lines():
    long = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and body_lines(node) > MAX_BODY_LINES:
                name = f"{path.relative_to(PACKAGE)}:{node.name}"
                if name not in LONG_BODIES:
                    long[name] = body_lines(node)
    assert not long, long


def test_the_rules_see_a_long_body():
    fn = ast.parse("def f():\n    '''doc'''\n" + "    x = 1\n" * 81).body[0]
    assert body_lines(fn) == 81


def test_every_hop_in_the_architecture_map_exists():
    text = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    hops = sorted(set(re.findall(r"`(rn50(?:\.\w+)*):([\w.]+)`", text)))
    assert len(hops) >= 20, hops  # the two walks name their hops this way
    missing = []
    for module, attr in hops:
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part, None)
        if obj is None:
            missing.append(f"{module}:{attr}")
    assert not missing, missing
    for path in re.findall(r"`((?:cli|bench|train|export|data)/[\w/]*\.py)`", text):
        assert (PACKAGE / path).is_file(), path

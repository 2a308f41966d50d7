"""The CPU facts every figure is recorded with: model, family/model/stepping and the speed-relevant flags, read from
/proc/cpuinfo, in the environment capture and in every report header."""

from pathlib import Path

import pytest

from rn50.bench.report import env_lines
from rn50.env import SPEED_FLAGS, capture_env, cpu_flags, cpu_has_vnni, cpu_label, cpu_signature

CPUINFO = Path("/proc/cpuinfo")


@pytest.mark.skipif(not CPUINFO.exists(), reason="needs /proc/cpuinfo (Linux)")
def test_cpu_facts_match_proc_cpuinfo():
    text = CPUINFO.read_text()
    first = dict(
        (k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in text.split("\n\n")[0].splitlines())
    )
    have = set(first.get("flags", "").split())
    assert cpu_flags() == [f for f in SPEED_FLAGS if f in have]
    assert cpu_has_vnni() == bool(have & {"avx512_vnni", "avx_vnni", "amx_int8"})
    if "cpu family" in first:
        assert cpu_signature() == f"family {first['cpu family']} model {first['model']} stepping {first['stepping']}"
        assert f"-f{first['cpu family']}m{first['model']}-" in cpu_label()
    assert cpu_label().endswith("-vnni" if cpu_has_vnni() else "-novnni")
    assert cpu_label() == cpu_label().lower() and " " not in cpu_label()


def test_report_header_names_the_cpu_its_signature_and_flags():
    env = capture_env()
    line = next(x for x in env_lines(env) if x.startswith("CPU:"))
    assert env["cpu"] in line
    assert env["cpu_signature"] in line
    assert all(f in line for f in env["cpu_flags"])

"""Tolerances that hold on any CPU (issue 24, item 12): `.ci/run` reruns the tests marked `numerics` with the
generic kernels (and AVX2 ones), and those tests take their tolerances from tests/numerics.py."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_ci_reruns_the_numerics_tests_on_generic_kernels_after_the_readme_line_and_very_slow():
    script = (REPO / ".ci" / "run").read_text()
    order = [script.index('bash -c "$cmd"'), script.index("bash scripts/test.sh -m very_slow\n"),
             script.index("bash scripts/test.sh -m numerics\n")]
    assert order == sorted(order)
    assert "kernels=(default)" in script and "ATEN_CPU_CAPABILITY=$isa MKL_ENABLE_INSTRUCTIONS=AVX2" in script
    assert re.search(r'"numerics: ', (REPO / "pyproject.toml").read_text())  # the marker is declared


@pytest.mark.very_slow  # a second collection of the whole suite
def test_numerics_tests_are_collected():
    proc = subprocess.run([str(REPO / ".venv/bin/python"), "-m", "pytest", "--collect-only", "-q", "-m", "numerics",
                           "-p", "no:cacheprovider", "-n", "0"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:]
    files = {line.split("::")[0] for line in proc.stdout.splitlines() if "::" in line}
    for name in ("test_probe_memory.py", "test_decoding.py", "test_taps.py", "test_models_heads.py", "test_losses.py",
                 "test_teacher_targets.py", "test_distill_mechanism.py"):
        assert f"tests/{name}" in files, name


@pytest.mark.parametrize("name", ["test_probe_memory.py", "test_decoding.py", "test_taps.py", "test_models_heads.py",
                                  "test_losses.py", "test_teacher_targets.py", "test_distill_mechanism.py"])
def test_no_hand_tuned_float_tolerance_left(name):
    """The tests that compare torch computations take their tolerances from tests/numerics.py (FLOAT64_REL, F32
    multiples), not a number tuned on one CPU (atol=1e-5, rel=2e-6, ...)."""
    text = (REPO / "tests" / name).read_text()
    tuned = re.findall(r"\b(?:atol|rtol|rel|abs)=\d[\d.]*e-\d+", text)
    assert not tuned, tuned

"""scripts/vqa_question_types.py: a VQA run's accuracy per question type, on the smoke teacher."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_question_type_table_adds_up_to_the_teachers_overall_score(smoke_teacher):
    """Every question type of the split has a column, and the per-type scores weighted by their question
    counts give the overall validation score fine-tuning wrote (to the rounding of 2 decimals)."""
    root = smoke_teacher["root"]
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "vqa_question_types.py"), "--config",
                           str(smoke_teacher["config"]), "--data", str(root / "data/vqa"), "--split", "val",
                           "--threads", "1", str(root / "teacher_vqa")], capture_output=True, text=True, check=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    scores = [float(cell) for cell in lines[2].strip("|").split("|")[1:]]
    counts = [int(cell) for cell in lines[3].strip("|").split("|")[1:]]
    assert header[0] == "run (val)" and len(lines) == 4
    annotations = json.loads(next((root / "data/vqa").glob("*val*annotations*.json")).read_text())
    assert header[1:] == sorted({a["question_type"] for a in annotations["annotations"]})
    assert sum(counts) == len(annotations["annotations"])
    overall = json.loads((root / "teacher_vqa" / "metrics.json").read_text())["metrics"]["overall"]
    weighted = sum(s * n for s, n in zip(scores, counts)) / sum(counts)
    assert weighted == pytest.approx(overall, abs=0.011)


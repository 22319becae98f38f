"""Evaluation metrics, one function per task, each returning a flat dict metric name -> float.

Light on import: pycocoevalcap, pycocotools and Java are only touched when caption metrics run.
"""

from optima.eval.captions import caption_scores, coco_caption_scores
from optima.eval.classification import nlvr2_scores, read_nlvr2_predictions, snli_ve_scores
from optima.eval.vqa import normalize_answer, vqa_scores

__all__ = [
    "caption_scores",
    "coco_caption_scores",
    "nlvr2_scores",
    "normalize_answer",
    "read_nlvr2_predictions",
    "snli_ve_scores",
    "vqa_scores",
]

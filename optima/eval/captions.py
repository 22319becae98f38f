"""COCO caption metrics through pycocoevalcap (PTB tokenizer, BLEU-1..4, METEOR, ROUGE-L, CIDEr-D,
SPICE), i.e. the numbers every captioning paper reports.

Two entry points that give the same numbers:

* :func:`caption_scores` takes plain dicts (image id -> references, image id -> caption) and calls
  pycocoevalcap's scorers directly; every reference image needs exactly one caption.
* :func:`coco_caption_scores` takes a COCO-format annotation file and the official results list and
  goes through ``pycocotools.coco.COCO.loadRes`` + ``COCOEvalCap.evaluate`` exactly like the
  official demo, which scores only the images that have a result.

The tokenizer and METEOR run on Java (JVM start-up plus METEOR's paraphrase tables cost about ten
seconds per call). SPICE also needs the Stanford CoreNLP 3.6.0 jars, which pycocoevalcap downloads
(~400 MB) on first use; ``spice="auto"`` runs SPICE only when those jars are already installed and
otherwise warns once and leaves ``SPICE`` out, so an offline machine never blocks or fails.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import subprocess
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from optima.errors import DataError, OptimaError
from optima.eval._checks import check_same_ids, format_ids

logger = logging.getLogger(__name__)

CAPTION_METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
SPICE_MODES = ("auto", "never")
_SPICE_CORENLP_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")


class JavaNotFoundError(OptimaError):
    """pycocoevalcap's PTB tokenizer, METEOR and SPICE need a Java runtime on PATH."""


class SpiceSkippedWarning(UserWarning):
    """SPICE could not run (Stanford CoreNLP models not installed, or the SPICE jar failed)."""


_spice_warned = False
_shared_meteor: dict = {"depth": 0, "scorer": None}  # the METEOR scorer of the innermost reuse_meteor() block


@contextlib.contextmanager
def reuse_meteor():
    """Inside this block every caption evaluation scores METEOR with one JVM, started at the first and stopped at
    the end: each start costs about 15 s of CPU (the JVM and METEOR's paraphrase tables), and an evaluation job
    scores a teacher and all its students. METEOR scores each call's segments on their own, so the scores are
    those of a fresh scorer."""
    _shared_meteor["depth"] += 1
    try:
        yield
    finally:
        _shared_meteor["depth"] -= 1
        if _shared_meteor["depth"] == 0 and _shared_meteor["scorer"] is not None:
            scorer, _shared_meteor["scorer"] = _shared_meteor["scorer"], None
            del scorer  # its __del__ stops the METEOR JVM now rather than at interpreter exit


def _meteor_score(gts, res) -> float:
    from pycocoevalcap.meteor.meteor import Meteor

    if _shared_meteor["depth"]:
        if _shared_meteor["scorer"] is None:
            _shared_meteor["scorer"] = Meteor()
        return float(_shared_meteor["scorer"].compute_score(gts, res)[0])
    scorer = Meteor()
    try:
        return float(scorer.compute_score(gts, res)[0])
    finally:
        del scorer  # its __del__ stops the METEOR JVM now rather than at interpreter exit


def caption_scores(
    references: Mapping[Any, list[str]],
    predictions: Mapping[Any, str],
    spice: str = "auto",
    meteor: bool = True,
) -> dict[str, float]:
    """Corpus-level caption metrics for one caption per image.

    ``references`` maps image id -> list of reference captions (raw text: the PTB tokenizer
    lowercases and strips punctuation), ``predictions`` maps image id -> generated caption; both must
    cover the same image ids. Returns ``Bleu_1..Bleu_4, METEOR, ROUGE_L, CIDEr`` (+ ``SPICE`` when it
    can run, see the module docstring) as fractions, named like pycocoevalcap names them. CIDEr's
    document frequencies come from the evaluated references, so scores depend on the whole set.
    ``meteor=False`` leaves METEOR out (its JVM and paraphrase tables cost ~15 s of CPU per call;
    used for the quick validation at the end of training).
    """
    _check_spice_mode(spice)
    _check_caption_inputs(references, predictions)
    require_java()
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    # One tokenizer JVM for both sides (COCOEvalCap starts two); PTB tokenizes line by line, so the
    # tokens are the same.
    tokenized = _tokenize({**{("ref", i): list(references[i]) for i in references},
                           **{("pred", i): [predictions[i]] for i in references}})
    gts = {i: tokenized[("ref", i)] for i in references}
    res = {i: tokenized[("pred", i)] for i in references}
    scores: dict[str, float] = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores.update({f"Bleu_{n + 1}": float(b) for n, b in enumerate(bleu)})
    if meteor:
        scores["METEOR"] = _meteor_score(gts, res)
    scores["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
    scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    if _spice_can_run(spice):
        spice_score = _run_spice(gts, res)
        if spice_score is not None:
            scores["SPICE"] = spice_score
    return scores


def coco_caption_scores(
    annotation_file: str | Path | Mapping[str, Any],
    results: str | Path | list[Mapping[str, Any]],
    spice: str = "auto",
) -> dict[str, float]:
    """The official demo: ``COCO(annotation_file).loadRes(results)``, ``COCOEvalCap`` restricted to
    the result images (``params['image_id'] = cocoRes.getImgIds()``), ``evaluate()``.

    ``annotation_file``: path to (or loaded dict of) a COCO caption annotation file, e.g.
    ``captions_val2014.json``; ``results``: path to (or list of) ``{"image_id", "caption"}`` records,
    one per image, every image_id present in the annotation file. Returns the same dict as
    :func:`caption_scores`.
    """
    _check_spice_mode(spice)
    coco = _load_coco(annotation_file)
    records = _load_results(results, coco)
    require_java()
    from pycocoevalcap import eval as coco_eval

    log = io.StringIO()  # pycocotools and COCOEvalCap print progress; keep it for the debug log
    with contextlib.redirect_stdout(log):
        coco_res = coco.loadRes(records)
        evaluator = coco_eval.COCOEvalCap(coco, coco_res)
        evaluator.params["image_id"] = coco_res.getImgIds()
        run_spice = _spice_can_run(spice)
        # evaluate() hard-codes SPICE (whose constructor downloads CoreNLP); swap it for a no-op
        # scorer when SPICE must not run, and drop its placeholder value afterwards.
        no_spice = contextlib.nullcontext() if run_spice else _patched(coco_eval, "Spice", _NoSpice)
        try:
            with no_spice:
                evaluator.evaluate()
        except (OSError, subprocess.SubprocessError, ValueError) as error:
            # SPICE is the last scorer: when it fails, every other metric is already computed.
            if not run_spice or not set(CAPTION_METRICS) <= set(evaluator.eval):
                raise
            _warn_spice_skipped(f"the SPICE jar failed ({error})")
            run_spice = False
    logger.debug("COCOEvalCap output:\n%s", log.getvalue())
    names = CAPTION_METRICS + (("SPICE",) if run_spice else ())
    return {name: float(evaluator.eval[name]) for name in names}


def require_java() -> str:
    """Path of the ``java`` executable pycocoevalcap will start, or a clear error."""
    java = shutil.which("java")
    if java is None:
        raise JavaNotFoundError(
            "caption metrics need Java: pycocoevalcap's PTB tokenizer and METEOR run `java` from PATH, "
            "and none was found (install a Java runtime, e.g. `apt-get install default-jre-headless` or "
            "`conda install openjdk`, or put $JAVA_HOME/bin on PATH)")
    return java


def spice_status() -> tuple[bool, str]:
    """Whether SPICE can run here without downloading anything, and if not, why."""
    if shutil.which("java") is None:
        return False, "Java is not on PATH"
    from pycocoevalcap.spice import spice as spice_module  # pycocoevalcap is a namespace package

    lib = Path(spice_module.__file__).parent / "lib"
    missing = [jar for jar in _SPICE_CORENLP_JARS if not (lib / jar).is_file()]
    if missing:
        return False, (f"the Stanford CoreNLP 3.6.0 jars SPICE needs are not in {lib} (missing: "
                       f"{', '.join(missing)}); on a machine with network, run `python -m "
                       "pycocoevalcap.spice.get_stanford_models` once to install them")
    return True, "ready"


def _spice_can_run(spice: str) -> bool:
    if spice == "never":
        return False
    ready, reason = spice_status()
    if not ready:
        _warn_spice_skipped(reason)
    return ready


def _run_spice(gts: dict[Any, list[str]], res: dict[Any, list[str]]) -> float | None:
    """SPICE of tokenized captions, or None (with the one warning) when the SPICE jar fails."""
    from pycocoevalcap.spice.spice import Spice

    try:
        return float(Spice().compute_score(gts, res)[0])
    except (OSError, subprocess.SubprocessError, ValueError) as error:
        _warn_spice_skipped(f"the SPICE jar failed ({error})")
        return None


def _warn_spice_skipped(reason: str) -> None:
    global _spice_warned
    if not _spice_warned:
        _spice_warned = True
        warnings.warn(f"SPICE skipped: {reason}. Pass spice='never' to silence this.",
                      SpiceSkippedWarning, stacklevel=3)


def _check_spice_mode(spice: str) -> None:
    if spice not in SPICE_MODES:
        raise DataError(f"spice={spice!r} is not one of {', '.join(SPICE_MODES)}")


def _check_caption_inputs(references: Mapping[Any, list[str]], predictions: Mapping[Any, str]) -> None:
    if not isinstance(references, Mapping) or not isinstance(predictions, Mapping):
        raise DataError("caption metrics: references and predictions must be dicts keyed by image id")
    check_same_ids(references, predictions, what="caption predictions", truth_key="image id")
    for image_id, refs in references.items():
        if isinstance(refs, str) or not isinstance(refs, Iterable):
            raise DataError(f"caption references: image id {image_id!r} needs a list of captions, "
                            f"got {type(refs).__name__}")
        refs = list(refs)
        if not refs or not all(isinstance(r, str) for r in refs):
            raise DataError(f"caption references: image id {image_id!r} needs at least one reference "
                            "and only strings")
    bad = [i for i, caption in predictions.items() if not isinstance(caption, str)]
    if bad:
        raise DataError(f"caption predictions: the prediction must be one string per image; not so for "
                        f"image id(s) {format_ids(bad)}")


def _tokenize(captions: Mapping[Any, list[str]]) -> dict[Any, list[str]]:
    """PTB-tokenize through pycocoevalcap, checking that no caption was lost on the way.

    The Java tokenizer reads one caption per line; collapsing every whitespace run first keeps a
    stray line break (or \\r, \\u2028 ...) inside a caption from shifting all later captions onto the
    wrong image. Whitespace runs carry no tokens, so the scores are unchanged.
    """
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    flat = {i: [{"caption": " ".join(c.split())} for c in caps] for i, caps in captions.items()}
    tokenized = PTBTokenizer().tokenize(flat)
    for key, caps in captions.items():
        got = len(tokenized.get(key, []))
        if got != len(caps):
            raise DataError(f"PTB tokenizer returned {got} caption(s) for {key!r} instead "
                            f"of {len(caps)}; a caption probably holds a character Java treats as a "
                            "line break")
    return tokenized


def _load_coco(annotation_file):
    from pycocotools.coco import COCO

    if isinstance(annotation_file, Mapping):
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO()
            coco.dataset = dict(annotation_file)
            coco.createIndex()
        source = "the annotation dict"
    else:
        path = Path(annotation_file)
        if not path.is_file():
            raise DataError(f"COCO caption annotation file not found: {path}")
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                coco = COCO(str(path))
        except (ValueError, KeyError, TypeError) as error:
            raise DataError(f"{path}: not a COCO annotation file ({error})") from error
        source = str(path)
    anns = coco.dataset.get("annotations")
    if not anns or "images" not in coco.dataset:
        raise DataError(f"{source}: a COCO caption annotation file needs non-empty 'images' and "
                        "'annotations' lists")
    if any("caption" not in a or "image_id" not in a for a in anns):
        raise DataError(f"{source}: every annotation needs 'image_id' and 'caption'")
    return coco


def _load_results(results, coco) -> list[dict[str, Any]]:
    """Validate the results list before loadRes, whose bare asserts would not name the culprit."""
    import json

    source = "caption results"
    if isinstance(results, (str, Path)):
        source = str(results)
        try:
            results = json.loads(Path(results).read_text())
        except (OSError, ValueError) as error:
            raise DataError(f"{source}: cannot read the results JSON ({error})") from error
    if not isinstance(results, list) or not results:
        raise DataError(f"{source}: expected a non-empty list of {{'image_id', 'caption'}} records")
    seen: set[Any] = set()
    duplicated: set[Any] = set()
    for index, record in enumerate(results):
        if not isinstance(record, Mapping) or "image_id" not in record or not isinstance(record.get("caption"), str):
            raise DataError(f"{source}: record {index} is not an {{'image_id', 'caption': str}} record")
        (duplicated if record["image_id"] in seen else seen).add(record["image_id"])
    if duplicated:
        raise DataError(f"{source}: more than one caption for image id(s) {format_ids(duplicated)}")
    # Images need references too: the official demo would fail deep inside a scorer's assert.
    with_refs = {img for img, anns in coco.imgToAnns.items() if anns and img in coco.imgs}
    unknown = seen - with_refs
    if unknown:
        raise DataError(f"{source}: {len(unknown)} result(s) for image ids that have no reference caption "
                        f"in the annotation file: {format_ids(unknown)}")
    return [dict(record) for record in results]  # loadRes writes an 'id' into each record


@contextlib.contextmanager
def _patched(module, name: str, value):
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)


class _NoSpice:
    """Stands in for pycocoevalcap's Spice inside COCOEvalCap.evaluate when SPICE must not run."""

    def compute_score(self, gts, res):
        return float("nan"), [float("nan")] * len(gts)

    def method(self):
        return "SPICE (skipped)"

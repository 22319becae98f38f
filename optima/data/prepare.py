"""`optima prepare TASK`: write the prepared data of one task (synthetic benchmark or official files).

The output directory is built in a temporary sibling and renamed into place at the end, so a failed or
killed run never leaves a directory that looks complete. It ends with ``prepared.json``: the task, the
source, counts per split, the hash of the data config that made it, and the file list. The same config
gives byte-identical files.
"""

from __future__ import annotations

from pathlib import Path

from optima.data.formats import MANIFEST_FILE, SPLITS, TOKENIZER_FILE


def add_arguments(parser) -> None:
    from optima.args import add_config_arguments
    from optima.tasks import task_names

    parser.add_argument("task", metavar="TASK", help=f"the task to prepare: {', '.join(task_names())}")
    parser.add_argument("--out", default=None, metavar="DIR", help="output directory (default: {paths.data}/{TASK})")
    add_config_arguments(parser, threads_help="accepted like every verb's (preparation runs in one thread)")


def prepared_config(task: str, config: dict) -> dict:
    """The part of the config that determines the prepared files of ``task`` (hashed into the manifest)."""
    from optima.tasks import get_task

    data = config["data"]
    section = {"source": data["source"], "tokenizer": data["tokenizer"], "context_length": data["context_length"]}
    section.update(get_task(task).prepared_config(data))
    if data["source"] == "synthetic":
        section["synthetic"] = data["synthetic"]
    else:
        section["official"] = (data["official"] or {}).get(task)
    return section


def prepare(task: str, config: dict, out: str | Path) -> dict:
    """Write ``task``'s prepared data to ``out`` atomically; returns the manifest."""
    from optima.config import config_hash
    from optima.data import official, synthetic
    from optima.data.tokenizers import build_tokenizer
    from optima.io import atomic_directory
    from optima.tasks import get_task

    spec = get_task(task)
    out = Path(out)
    data = config["data"]
    tokenizer = build_tokenizer(config)
    with atomic_directory(out) as tmp:
        _chmod_like_mkdir(tmp)
        if data["source"] == "synthetic":
            counts = synthetic.generate(spec, synthetic.SyntheticConfig.from_config(config), tmp)
        else:
            counts = official.assemble(spec, config, tmp)
        spec.finish_prepare(tmp, data)
        tokenizer.save(tmp / TOKENIZER_FILE)
        if data["source"] != "synthetic":
            _count_examples(task, tmp, counts, tokenizer, data["image_size"])
        section = prepared_config(task, config)
        manifest = {
            "task": task,
            "source": data["source"],
            "config_hash": config_hash(section),
            "config": section,
            "splits": {split: counts[split] for split in SPLITS if split in counts},
            "files": sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if not p.is_dir()),
        }
        _write_json(tmp / MANIFEST_FILE, manifest, indent=1)
    return manifest


def _chmod_like_mkdir(path: Path) -> None:
    """The temporary directory is created 0700; give the final output the mode a plain mkdir gives."""
    import os

    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o777 & ~umask)


def _write_json(path: Path, obj, indent: int | None = None) -> None:
    import json

    path.write_text(json.dumps(obj, ensure_ascii=False, indent=indent) + "\n", encoding="utf-8")


def _count_examples(task: str, root: Path, counts: dict, tokenizer, image_size: int) -> None:
    """Load every split through the real loaders (validating it) and record its size."""
    from optima.tasks import build_dataset

    for split in counts:
        dataset = build_dataset(task, root, split, tokenizer, image_size, train=True, cache_images=False)
        counts[split]["examples"] = len(dataset)


def run(args) -> int:
    import time

    from optima.args import load_config_from_args
    from optima.tasks import check_task

    check_task(args.task)
    config = load_config_from_args(args)
    out = Path(args.out) if args.out else Path(config["paths"]["data"]) / args.task
    start = time.perf_counter()
    manifest = prepare(args.task, config, out)
    sizes = ", ".join(f"{s} {c['examples']} examples / {c['images']} images" for s, c in manifest["splits"].items())
    print(f"optima prepare: {args.task} ({manifest['source']}) -> {out}: {sizes} "
          f"[{time.perf_counter() - start:.1f} s]")
    return 0

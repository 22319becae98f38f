"""`optima bench models`: parameters, training-step time and caption decoding throughput.

Prints, for the default teacher and student: parameters per module, forward+backward time of one
CoCa training batch (contrastive + captioning loss), and captions per second of
``optima.models.decoding`` (greedy and beam search, with and without the key/value cache) next to
open_clip's ``CoCa.generate``. ``generate`` needs ``transformers`` < 4.57; where it cannot be
imported its rows are skipped with a note (keep transformers out of the project's environment and
run this module from a separate one, e.g. ``python -m optima.models.bench``).

The models are randomly initialised: a random model rarely emits the end token, so every caption
runs to ``--max-length`` (the worst case, the same for every decoder).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", default="optima-tiny-teacher", help="model config name of the teacher")
    parser.add_argument("--student", default="optima-tiny-student", help="model config name of the student")
    parser.add_argument("--vocab-size", type=int, default=None,
                        help="text vocabulary (default: the synthetic benchmark's word tokenizer)")
    parser.add_argument("--context-length", type=int, default=24, help="tokens per text, start and end included")
    parser.add_argument("--batch-size", type=int, default=64, help="training batch and decoding batch")
    parser.add_argument("--decode-images", type=int, default=64, help="images captioned per decoder and model")
    parser.add_argument("--max-length", type=int, default=None, help="caption length limit (default: context length)")
    parser.add_argument("--beam-size", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions after one warm-up (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the measurements to this JSON file")


def run(args: argparse.Namespace) -> int:
    import torch

    from optima.models import create_coca, num_layers

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    vocab_size = args.vocab_size or _synthetic_vocab_size(args.context_length)
    max_length = args.max_length or args.context_length
    report: dict = {
        "settings": {
            "vocab_size": vocab_size, "context_length": args.context_length, "batch_size": args.batch_size,
            "decode_images": args.decode_images, "max_length": max_length, "beam_size": args.beam_size,
            "threads": torch.get_num_threads(), "repeats": args.repeats, "torch": torch.__version__,
            "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        },
        "models": {},
    }
    generate_note = _open_clip_generate_unavailable()
    for role, name in (("teacher", args.teacher), ("student", args.student)):
        torch.manual_seed(args.seed)
        model = create_coca(name, vocab_size=vocab_size, context_length=args.context_length)
        image_size = _image_size(model)
        report["models"][role] = {
            "name": name,
            "image_size": image_size,
            "parameters": count_parameters(model),
            "layers": num_layers(model),
            "train_step_s": time_training_step(model, args.batch_size, image_size, vocab_size, args.context_length,
                                               args.repeats, args.seed),
            "decoding": time_decoding(model, args.decode_images, args.batch_size, image_size, max_length,
                                      args.beam_size, args.repeats, args.seed, generate_note is None),
        }
    report["settings"]["open_clip_generate"] = generate_note or "available"
    print(format_report(report))
    if args.json:
        from optima.io import atomic_write_json

        atomic_write_json(args.json, report)
    return 0


def _synthetic_vocab_size(context_length: int) -> int:
    from optima.data.tokenizers import WordTokenizer

    return WordTokenizer.for_synthetic(context_length).vocab_size


def _image_size(model) -> int:
    size = model.visual.image_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def _open_clip_generate_unavailable() -> str | None:
    """None when ``CoCa.generate`` can run here, else why not."""
    try:
        import transformers
        from open_clip import coca_model
    except ImportError as exc:
        return f"skipped: transformers is not importable ({exc.name or exc})"
    if not getattr(coca_model, "_has_transformers", False):
        return f"skipped: open_clip cannot use transformers {transformers.__version__} (it needs < 4.57)"
    return None


def count_parameters(model) -> dict[str, int]:
    """Parameters per distillable module, the rest (logit scale), and the total."""
    from optima.models import model_summary

    return model_summary(model)["parameters"]


def _synthetic_batch(batch_size: int, image_size: int, vocab_size: int, context_length: int, seed: int):
    """Random images and captions of random length: start, words, end, padding (ids as the word tokenizer)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, 3, image_size, image_size, generator=generator)
    pad_id, sot_id, eot_id, first_word = 0, 2, 3, 4
    texts = torch.full((batch_size, context_length), pad_id, dtype=torch.long)
    lengths = torch.randint(3, context_length - 1, (batch_size,), generator=generator)
    for row, length in enumerate(lengths.tolist()):
        texts[row, 0] = sot_id
        texts[row, 1 : length + 1] = torch.randint(first_word, vocab_size, (length,), generator=generator)
        texts[row, length + 1] = eot_id
    return images, texts


def _median_seconds(function, repeats: int) -> float:
    function()  # warm-up: allocator, lazy initialisation
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_training_step(model, batch_size: int, image_size: int, vocab_size: int, context_length: int,
                       repeats: int, seed: int) -> float:
    """Median seconds of forward + CoCa loss (contrastive 1, captioning 2) + backward on one batch."""
    from open_clip.loss import CoCaLoss

    images, texts = _synthetic_batch(batch_size, image_size, vocab_size, context_length, seed)
    loss_fn = CoCaLoss(caption_loss_weight=2.0, clip_loss_weight=1.0, pad_id=0)
    model.train()

    def step():
        model.zero_grad(set_to_none=True)
        out = model(images, texts)
        clip_loss, caption_loss = loss_fn(
            out["image_features"], out["text_features"], out["logits"], out["labels"], out["logit_scale"]
        )
        (clip_loss + caption_loss).backward()

    seconds = _median_seconds(step, repeats)
    model.zero_grad(set_to_none=True)
    model.eval()
    return seconds


def time_decoding(model, num_images: int, batch_size: int, image_size: int, max_length: int, beam_size: int,
                  repeats: int, seed: int, with_generate: bool) -> dict[str, dict]:
    """Captions per second of each decoder over ``num_images`` images in batches of ``batch_size``."""
    import torch

    from optima.models.decoding import generate_captions

    pad_id, sot_id, eot_id = 0, 2, 3
    images = torch.randn(num_images, 3, image_size, image_size, generator=torch.Generator().manual_seed(seed + 1))
    batches = images.split(batch_size)
    ours = dict(sot_id=sot_id, eot_id=eot_id, pad_id=pad_id, max_length=max_length)
    decoders = {
        "greedy (optima, cached)": lambda x: generate_captions(model, x, **ours, method="greedy"),
        "greedy (optima, no cache)": lambda x: generate_captions(model, x, **ours, method="greedy", use_cache=False),
        f"beam {beam_size} (optima, cached)": lambda x: generate_captions(model, x, **ours, method="beam",
                                                                          beam_size=beam_size),
        f"beam {beam_size} (optima, no cache)": lambda x: generate_captions(model, x, **ours, method="beam",
                                                                            beam_size=beam_size, use_cache=False),
    }
    if with_generate:
        # greedy = top-k sampling with k=1; no minimum length (min_seq_len=1 counts the start token)
        generate = dict(seq_len=max_length, sot_token_id=sot_id, eos_token_id=eot_id, pad_token_id=pad_id,
                        min_seq_len=1)
        decoders["greedy (open_clip generate)"] = lambda x: model.generate(x, generation_type="top_k", top_k=1,
                                                                          **generate)
        decoders[f"beam {beam_size} (open_clip generate)"] = lambda x: model.generate(
            x, generation_type="beam_search", num_beams=beam_size, num_beam_groups=1, **generate)
    model.eval()
    results = {}
    outputs = {}
    for label, decode in decoders.items():
        with torch.no_grad():
            seconds = _median_seconds(lambda: outputs.__setitem__(label, [decode(b) for b in batches]), repeats)
        results[label] = {"captions_per_s": num_images / seconds, "seconds": seconds}
    # sanity: the same captions as our cached decoder (open_clip forces an end token at max_length)
    for label in results:
        reference = ("greedy" if label.startswith("greedy") else f"beam {beam_size}") + " (optima, cached)"
        if label != reference:
            results[label]["agreement"] = _agreement(outputs[label], outputs[reference], eot_id, pad_id, max_length)
            results[label]["agreement_with"] = reference
    return results


def _agreement(candidate: list, reference: list, eot_id: int, pad_id: int, max_length: int) -> float:
    """Fraction of identical captions: the tokens before the first end or padding token, at most max_length - 2
    (open_clip's generate ends a caption at a generated padding token and forces an end token at max_length)."""
    def captions(batches):
        rows = []
        for batch in batches:
            for row in batch.tolist():
                row = row[1 : max_length - 1]
                ends = [i for i, token in enumerate(row) if token in (eot_id, pad_id)]
                rows.append(tuple(row[: ends[0]] if ends else row))
        return rows

    pairs = list(zip(captions(candidate), captions(reference)))
    return sum(a == b for a, b in pairs) / max(1, len(pairs))


def format_report(report: dict) -> str:
    settings = report["settings"]
    lines = [
        "optima bench models: vocab {vocab_size}, context {context_length}, batch {batch_size}, "
        "threads {threads}, torch {torch}, load average {load_average}".format(**settings),
        "",
        _table(
            ["model", "config", "image", "layers V/T/M", "vision", "text", "multimodal", "other", "total",
             "fwd+bwd s/batch"],
            [[role, m["name"], m["image_size"], "/".join(str(m["layers"][k]) for k in ("vision", "text", "multimodal")), *(f"{m['parameters'][k]:,}" for k in ("vision", "text", "multimodal",
              "other", "total")), f"{m['train_step_s']:.3f}"] for role, m in report["models"].items()],
        ),
        "",
        f"caption decoding: {settings['decode_images']} images, batches of {settings['batch_size']}, "
        f"max length {settings['max_length']}",
    ]
    rows = []
    for role, m in report["models"].items():
        for label, result in m["decoding"].items():
            agreement = f"{result['agreement']:.0%}" if "agreement" in result else ""
            rows.append([role, label, f"{result['captions_per_s']:.1f}", f"{result['seconds']:.3f}", agreement])
    lines.append(_table(["model", "decoder", "captions/s", "s total", "same captions as optima cached"], rows))
    if settings["open_clip_generate"] != "available":
        lines.append(f"open_clip generate: {settings['open_clip_generate']}")
    return "\n".join(lines)


def _table(header: list, rows: list[list]) -> str:
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    fmt = lambda row: "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))  # noqa: E731
    return "\n".join([fmt(cells[0]), "  ".join("-" * w for w in widths), *(fmt(row) for row in cells[1:])])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m optima.models.bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())

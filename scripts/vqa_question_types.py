"""VQA accuracy per question type of one or more runs (teachers or students) on a split: which kind of
question separates them (results/published/claims/README.md: "What splits the VQA teachers"). Prints a Markdown table, one row per
run, and a last row with the number of questions of each type.

    python scripts/vqa_question_types.py --config config/claims.yaml --data data/processed/claims/vqa \
        --split val results/claims/teachers/vqa/seed*
"""
import argparse
import collections
import sys

from optima.args import add_config_arguments, setup


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="prepared VQA data directory")
    parser.add_argument("--split", default="val", help="train | val | test (default: val)")
    parser.add_argument("runs", nargs="+", help="VQA run directories")
    add_config_arguments(parser, config_help="the config the runs were trained with")
    args = parser.parse_args(argv)

    from optima.tasks import build_dataset
    from optima.data.tokenizers import load_tokenizer
    from optima.eval.evaluate import predict_labels
    from optima.eval.vqa import vqa_question_type_scores
    from optima.tasks import load_task_model

    config, runtime = setup(args)
    tokenizer = load_tokenizer(args.data)
    dataset = build_dataset("vqa", args.data, args.split, tokenizer, config["data"]["image_size"], train=False,
                            cache_images=config["data"].get("cache_images", True))
    processing = config["eval"].get("vqa_answer_processing", "official")
    rows = {}
    for run in args.runs:
        model = load_task_model(run).to(runtime.device)
        if model.task != "vqa":
            parser.error(f"{run}: a {model.task} run, not VQA")
        ids, labels = predict_labels(model, dataset, config["eval"].get("batch_size", 128), runtime.device,
                                     runtime.autocast)
        results = [{"question_id": qid, "answer": dataset.answers[int(k)]} for qid, k in zip(ids, labels)]
        rows[run] = vqa_question_type_scores(dataset.annotations, dataset.questions, results, processing)
    counts = collections.Counter(a["question_type"] for a in dataset.annotations["annotations"])
    print(markdown_table(rows, counts, args.split))
    return 0


def markdown_table(rows: dict[str, dict[str, float]], counts: dict[str, int], split: str) -> str:
    """One row per run (accuracy per question type), then the questions per type."""
    types = sorted(counts)
    lines = [f"| run ({split}) | " + " | ".join(types) + " |", "|---|" + "---:|" * len(types)]
    lines += [f"| {run} | " + " | ".join(f"{scores[t]:.2f}" for t in types) + " |" for run, scores in rows.items()]
    lines.append("| questions | " + " | ".join(str(counts[t]) for t in types) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

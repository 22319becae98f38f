"""Issue 23's instruments, each pinned by its mechanism: the reward decomposition adds up to the logged reward,
the balanced reward does not depend on a term's scale, the held-out set is disjoint from the probe and from
training, the oracle keeps exactly its best candidate (weights and random state), replay plays exactly the
recorded counts, the learning-rate schedules, and an end-to-end run of every new method on the smoke data."""

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch

from optima.bandits import make_policy
from optima.distill.optim import build_optimizer, build_scheduler, warmup_cosine
from optima.distill.oracle import OracleRounds, StepContext
from optima.distill.rounds import TERMS, balanced_decrement, round_reward
from optima.runtime import Runtime

EPS32 = float(np.finfo(np.float32).eps)


# ----------------------------------------------------------------------------- rewards
def _row(scale_vision: float = 1.0) -> dict:
    before = {"task": 2.0, "kd": 0.5, "vision": 3.0 * scale_vision, "text": 1.0, "multimodal": 20.0}
    after = {"task": 1.8, "kd": 0.45, "vision": 2.4 * scale_vision, "text": 0.9, "multimodal": 19.0}
    row = {f"term_{t}_before": before[t] for t in TERMS} | {f"term_{t}_after": after[t] for t in TERMS}
    row["probe_before"], row["probe_loss"] = sum(before.values()), sum(after.values())
    return row


def test_balanced_reward_is_invariant_to_rescaling_one_term():
    plain, scaled = _row(), _row(scale_vision=10.0)
    assert balanced_decrement(scaled) == pytest.approx(balanced_decrement(plain), rel=1e-12)
    # the mean of the terms' own relative decrements: (0.1 + 0.1 + 0.2 + 0.1 + 0.05) / 5
    assert balanced_decrement(plain) == pytest.approx(0.11, rel=1e-12)
    # the paper's probe reward does move with the term's scale (the vision term weighs more)
    assert round_reward("probe", scaled) != pytest.approx(round_reward("probe", plain), rel=1e-3)


def test_balanced_reward_leaves_out_terms_absent_from_the_objective():
    row = _row()
    row["term_kd_before"] = row["term_kd_after"] = 0.0  # kd_weight 0: the term is not in the objective
    assert balanced_decrement(row) == pytest.approx((0.1 + 0.2 + 0.1 + 0.05) / 4, rel=1e-12)


def test_decomposition_adds_up_to_the_logged_reward_and_falls_back_to_task_and_distillation():
    from optima.paper.decomposition import DISTILLATION, contributions

    row = {**_row(), "task": "vqa", "method": "uniform", "seed": 0, "round": 0, "arm": "vision"}
    full = contributions(pd.DataFrame([row]))
    assert set(full["term"]) == set(TERMS)
    assert full["contribution"].sum() == pytest.approx(round_reward("probe", row), abs=1e-12)
    old = {k: v for k, v in row.items() if not k.startswith("term_")}
    old.update(probe_task_before=2.0, probe_task_loss=1.8)
    split = contributions(pd.DataFrame([old])).set_index("term")["contribution"]
    assert set(split.index) == {"task", DISTILLATION}
    assert split["task"] == pytest.approx(0.2 / row["probe_before"], rel=1e-12)
    assert split.sum() == pytest.approx(round_reward("probe", row), abs=1e-12)


# ----------------------------------------------------------------------------- held-out set
class _Items:
    """A dataset whose example i shows images (i // 2,): two examples per image."""

    def __len__(self):
        return 80

    def image_keys(self, index):
        return (f"img{index // 2}",)


def test_held_out_set_is_disjoint_by_image_and_leaves_the_probe_unchanged():
    from optima.distill.probe import split_held_out, split_probe

    probe, train = split_probe(_Items(), 4, 0)
    probe2, heldout, train2 = split_held_out(_Items(), 4, 6, 0)
    assert probe2 == probe and len(heldout) == 6
    images = lambda idx: {f"img{i // 2}" for i in idx}  # noqa: E731
    assert images(probe2).isdisjoint(images(heldout))
    assert images(train2).isdisjoint(images(probe2) | images(heldout))
    assert set(train2) < set(train)  # every method loses the same held-out images from training
    with pytest.raises(Exception, match="distill.probe_size \\+ distill.heldout_size"):
        split_held_out(_Items(), 4, 8, 0)  # 12 of 40 images > 25 %


# ----------------------------------------------------------------------------- oracle
class _Toy(torch.nn.Module):
    """Three 'modules' (weights); the active ones are fitted; dropout makes the random state matter."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.ParameterDict({m: torch.nn.Parameter(torch.zeros(4)) for m in ("vision", "text", "multimodal")})
        self.target = {"vision": 1.0, "text": -2.0, "multimodal": 0.5}
        self.active = ("vision",)

    def forward(self, batch):
        x = torch.nn.functional.dropout(batch["x"], 0.3, training=self.training)
        loss = sum(((x @ self.w[m]) - self.target[m]).pow(2).mean() for m in self.active)
        return {"loss": loss, "task_loss": loss}

    def heldout(self, x):
        with torch.no_grad():
            return float(sum(((x @ self.w[m]) - self.target[m]).pow(2).mean() for m in self.w) * (1 + 0 * x.sum()))


def _train(objective, arm, batches, state):
    from optima.distill.loop import optimisation_step

    objective.load_state_dict(state["objective"])
    optimizer = build_optimizer(objective.named_parameters(), 0.1, 0.0)
    optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
    scheduler = build_scheduler(optimizer, 0, 100)
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    objective.active = arm
    for batch in batches:
        optimisation_step(objective, objective, optimizer, scheduler, batch, Runtime(torch.device("cpu")), 1.0)
    return {k: v.clone() for k, v in objective.state_dict().items()}, torch.get_rng_state()


def test_oracle_keeps_exactly_its_best_candidate_and_its_random_state():
    from optima.distill.loop import optimisation_step

    torch.manual_seed(0)
    heldout_x = torch.randn(16, 4)
    batches = [{"x": torch.randn(8, 4)} for _ in range(3)]
    objective = _Toy()
    optimizer = build_optimizer(objective.named_parameters(), 0.1, 0.0)
    scheduler = build_scheduler(optimizer, 0, 100)
    runtime = Runtime(torch.device("cpu"))
    start = {"objective": copy.deepcopy(objective.state_dict()), "optimizer": copy.deepcopy(optimizer.state_dict()),
             "scheduler": copy.deepcopy(scheduler.state_dict()), "rng": torch.get_rng_state()}
    arms = [("vision",), ("text",), ("multimodal",)]

    def set_active(modules):
        objective.active = tuple(modules)

    oracle = OracleRounds(arms, 3, lambda: objective.heldout(heldout_x), set_active)
    ctx = StepContext(objective, objective, optimizer, scheduler, runtime, 1.0, lambda values: None,
                      lambda step: batches[step], 3,
                      lambda batch: optimisation_step(objective, objective, optimizer, scheduler, batch, runtime, 1.0))
    for step in range(3):
        oracle.replace_step(step, batches[step], ctx)
        row = oracle.after_step(step, {})
    kept_weights = {k: v.clone() for k, v in objective.state_dict().items()}
    kept_rng = torch.get_rng_state()

    reference = _Toy()
    results = [_train(reference, arm, batches, start) for arm in arms]
    losses = []
    for weights, _ in results:
        reference.load_state_dict(weights)
        losses.append(reference.heldout(heldout_x))
    best = int(np.argmin(losses))
    assert oracle.candidates == pytest.approx(losses, rel=0, abs=0)
    assert oracle.kept == best and row["arm"] == arms[best][0]
    for key, value in results[best][0].items():
        assert torch.equal(kept_weights[key], value), key
    assert torch.equal(kept_rng, results[best][1])  # as if that arm alone had trained
    assert len({round(v, 12) for v in losses}) == 3, "the arms must differ for the test to mean something"
    assert row["reward"] == pytest.approx((row["heldout_before"] - row["heldout_after"]) / row["heldout_before"])


# ----------------------------------------------------------------------------- replay
def test_replay_plays_exactly_the_recorded_counts_in_a_seeded_order():
    counts = [5, 2, 9]
    orders = []
    for seed in (0, 0, 1):
        policy = make_policy("replay", 3, seed, counts=counts)
        order = []
        for _ in range(sum(counts)):
            arm = policy.select()
            policy.update(arm, 0.0)
            order.append(arm)
        assert [order.count(a) for a in range(3)] == counts
        with pytest.raises(ValueError, match="only 16 rounds"):
            policy.select()
        orders.append(order)
    assert orders[0] == orders[1] != orders[2]


def test_recorded_arm_counts_read_a_train_log(tmp_path):
    from optima.commands.distill import recorded_arm_counts
    from optima.errors import CheckpointError

    log = tmp_path / "train_log.csv"
    log.write_text("step,arm,reward\n1,vision,0.1\n2,,\n3,multimodal,0.2\n4,vision,0.0\n")
    assert recorded_arm_counts(log, "replay") == [2, 0, 1]
    with pytest.raises(CheckpointError, match="train the source method first"):
        recorded_arm_counts(tmp_path / "none.csv", "replay")


# ----------------------------------------------------------------------------- schedules
def test_schedules_keep_late_rounds_and_the_default_is_unchanged():
    cosine = warmup_cosine(4, 100)
    reference = [(s + 1) / 4 if s < 4 else 0.5 * (1 + np.cos(np.pi * min(1.0, (s - 4) / 96))) for s in range(100)]
    assert [cosine(s) for s in range(100)] == reference  # bit for bit: the claims runs' schedule
    constant, linear = warmup_cosine(4, 100, "constant"), warmup_cosine(4, 100, "linear", floor=0.2)
    assert [constant(s) for s in range(4, 100)] == [1.0] * 96
    assert linear(4) == 1.0 and linear(100) == pytest.approx(0.2) and linear(52) == pytest.approx(0.6)
    floored = warmup_cosine(0, 100, "cosine", floor=0.1)
    assert floored(100) == pytest.approx(0.1) and min(floored(s) for s in range(101)) >= 0.1 - 1e-12
    with pytest.raises(ValueError, match="one of cosine, linear, constant"):
        warmup_cosine(0, 10, "step")


# ----------------------------------------------------------------------------- end to end
@pytest.mark.very_slow  # every new method trained end to end
def test_every_new_method_trains_and_logs_what_it_measures(smoke_teacher, tmp_path):
    from conftest import optima_verb

    root = smoke_teacher["root"]
    teacher = tmp_path / "teacher"
    optima_verb("finetune", "vqa", "--config", smoke_teacher["config"], "--data", root / "data/vqa",
                "--init", root / "pretrain", "--out", teacher, "--threads", 1, "--set", "finetune.steps=2")
    sets = ["distill.heldout_size=4", "distill.log_rewards=true", "distill.methods.oracle={policy: oracle}",
            "distill.methods.optima-balanced={policy: optima, reward: balanced}",
            "distill.methods.optima-heldout={policy: optima, reward: heldout}",
            "distill.methods.replay={policy: replay, options: {source: optima}}"]
    methods = ["uniform", "optima", "replay", "optima-balanced", "optima-heldout", "oracle"]
    optima_verb("distill", "vqa", "--config", smoke_teacher["config"], "--data", root / "data/vqa",
                "--teacher", teacher, "--threads", 1, "--seed", 0, "--out-root", tmp_path / "students",
                *[a for m in methods for a in ("--method", m)], *[a for s in sets for a in ("--set", s)])
    logs = {m: pd.read_csv(tmp_path / "students" / m / "seed0" / "train_log.csv") for m in methods}
    rounds = {m: log[log["arm"].notna()] for m, log in logs.items()}
    # the decomposition of every logged probe reward adds up to it (float32 terms: a few eps of L_before)
    uniform = rounds["uniform"]
    parts = sum(uniform[f"term_{t}_before"] - uniform[f"term_{t}_after"] for t in TERMS) / uniform["probe_before"]
    probe = (uniform["probe_before"] - uniform["probe_loss"]) / uniform["probe_before"]
    assert (parts - probe).abs().max() <= 4 * (len(TERMS) + 1) * EPS32
    # each variant's policy was fed its own reward
    for method, kind in (("optima-balanced", "balanced"), ("optima-heldout", "heldout"), ("optima", "probe")):
        fed = rounds[method].apply(lambda row: round_reward(kind, row), axis=1)
        assert np.allclose(fed, rounds[method]["reward"], rtol=1e-12, atol=0)
    # replay: OPTIMA's allocation exactly, in another order
    assert sorted(rounds["replay"]["arm"]) == sorted(rounds["optima"]["arm"])
    # the oracle logs every candidate and keeps the best
    oracle = rounds["oracle"]
    candidates = oracle[["oracle_vision", "oracle_text", "oracle_multimodal"]].to_numpy()
    assert (oracle["heldout_after"].to_numpy() == candidates.min(axis=1)).all()
    assert list(oracle["arm"]) == [("vision", "text", "multimodal")[k] for k in candidates.argmin(axis=1)]
    for method in methods:
        assert json.loads((tmp_path / "students" / method / "seed0" / "metrics.json").read_text())["method"] == method


# ----------------------------------------------------------------------------- val-best
def test_val_best_copies_the_fixed_module_best_on_validation_per_task():
    from optima.paper.results import VAL_BEST, add_val_best

    rows = []
    for task, metric, val in (("nlvr2", "accuracy", {"vision": 0.60, "text": 0.55, "multimodal": 0.70}),
                              ("captions", "CIDEr", {"vision": 1.9, "text": 1.7, "multimodal": 1.5})):
        for module, value in val.items():
            for seed in (0, 1):
                for split, shift in (("val", 0.0), ("test", -0.01)):
                    rows.append({"task": task, "method": f"fixed-{module}", "seed": seed, "role": "student",
                                 "split": split, "metric": metric, "value": value + shift + 0.001 * seed})
    rows.append({"task": "nlvr2", "method": "layerwise", "seed": 0, "role": "student", "split": "val",
                 "metric": "accuracy", "value": 0.99})  # not a fixed-module method: never chosen
    runs = pd.DataFrame(rows)
    out, chosen = add_val_best(runs)
    assert chosen == {"captions": "fixed-vision", "nlvr2": "fixed-multimodal"}
    copied = out[out["method"] == VAL_BEST]
    for task, source in chosen.items():
        original = runs[(runs["task"] == task) & (runs["method"] == source)].drop(columns="method")
        mine = copied[copied["task"] == task].drop(columns="method")
        pd.testing.assert_frame_equal(mine.sort_values(list(mine.columns)).reset_index(drop=True),
                                      original.sort_values(list(original.columns)).reset_index(drop=True),
                                      check_dtype=False)
    assert set(copied["split"]) == {"val", "test"}  # chosen on validation, reported on every split

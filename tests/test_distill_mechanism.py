"""What makes the method comparison fair, pinned on the mechanism (not just on a run exiting):
module selection, per-module weight, reward bookkeeping, the probe's hold-out, a frozen teacher,
the KD that matches each head, and one set of OPTIMA defaults everywhere."""

import csv
import dataclasses
import math
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from optima.bandits import make_policy
from optima.bandits.thompson import OptimaOptions
from optima.config import MODULES, ConfigError, ConfigWarning, load_config, memory_warnings
from optima.tasks import build_dataset
from optima.data.tokenizers import load_tokenizer
from optima.distill.losses import POOLER_KEY, prediction_kd
from optima.distill.loop import TrainSpec, fit
from optima.distill.objectives import DistillationObjective
from optima.distill.probe import Probe, split_probe
from optima.distill.rounds import RoundController, relative_decrement
from optima.runtime import Runtime
from optima.distill.sampling import fixed_batch
from optima.models.taps import FeatureTaps
from optima.models import create_coca
from optima.tasks import create_task_model
from optima.models.student import make_student

from tests.numerics import FLOAT64_REL

REPO = Path(__file__).resolve().parents[1]
CONFIGS = [REPO / "params.yaml", *sorted((REPO / "config").glob("*.yaml"))]


def prepare(task, out, config):
    subprocess.run([sys.executable, "-m", "optima", "prepare", task, "--config", str(config), "--out", str(out)],
                   check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def smoke_data(tmp_path_factory, smoke_config_path):
    root = tmp_path_factory.mktemp("mechanism")
    return {task: prepare(task, root / task, smoke_config_path) for task in ("vqa", "captions", "nlvr2")}


def build(task, data_dir, **objective_options):
    """A random nano teacher (no training needed to test the mechanism), its half-depth student, the objective."""
    torch.manual_seed(0)
    tokenizer = load_tokenizer(data_dir)
    train = build_dataset(task, data_dir, "train", tokenizer, 32, train=True)
    coca = create_coca("optima-nano-teacher", vocab_size=tokenizer.vocab_size, context_length=tokenizer.context_length)
    teacher = create_task_model(task, coca, getattr(train, "num_classes", None))
    student_coca, layer_map = make_student(teacher.coca, 0.5)
    student = create_task_model(task, student_coca, getattr(train, "num_classes", None))
    options = {"kd_weight": 1.0, "temperature": 2.0, "layer_weight": 1.0, **objective_options}
    objective = DistillationObjective(student, teacher, layer_map, options.pop("kd_weight"),
                                      options.pop("temperature"), options.pop("layer_weight"), **options)
    return objective, train


def layer_terms(losses):
    return {k for k in losses if k.startswith("layer_loss_")}


def in_float64(objective, batch):
    """The objective and a batch in float64, where two computations of one loss agree to rounding whatever the
    CPU's kernels (tests/numerics.py); the losses stay float64 (optima.runtime.at_least_float32)."""
    objective.teacher.double()  # held outside the objective's parameters (frozen)
    return objective.double(), {k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v
                                for k, v in batch.items()}


def same(a, b):
    return torch.allclose(a, b, rtol=FLOAT64_REL, atol=0)


# ---------------------------------------------------------------------- a round distils only its module
@pytest.mark.numerics
def test_a_round_matches_only_the_chosen_modules_layers(smoke_data):
    objective, train = build("vqa", smoke_data["vqa"])
    objective, batch = in_float64(objective, fixed_batch(train, range(4)))
    for module in MODULES:
        losses = objective.compute(batch, (module,))
        assert layer_terms(losses) == {f"layer_loss_{module}"}
        expected = losses["task_loss"] + losses["kd_loss"] + losses[f"layer_loss_{module}"]
        assert same(losses["loss"], expected)
    # the teacher's taps hook only the active module's layers (nothing else computed or matched)
    out = objective.teacher_outputs(batch, ("text",), need_logits=False)
    assert {k.split(".")[0] for k in out["features"]} == {"text"}


@pytest.mark.numerics
def test_layerwise_and_a_fixed_module_give_that_module_the_same_weight(smoke_data):
    objective, train = build("vqa", smoke_data["vqa"], layer_weight=2.5)
    objective, batch = in_float64(objective, fixed_batch(train, range(4)))
    everything = objective.compute(batch, MODULES)
    base = everything["task_loss"] + everything["kd_loss"]
    terms = {m: everything[f"layer_loss_{m}"] for m in MODULES}
    assert same(everything["loss"], base + 2.5 * sum(terms.values()))  # layerwise: each at full weight
    for module in MODULES:
        alone = objective.compute(batch, (module,))
        assert same(alone[f"layer_loss_{module}"], terms[module])
        # the same weight as under layerwise (alone's loss minus base cancels: compared at the loss's own size)
        assert torch.allclose(alone["loss"] - base, 2.5 * terms[module], rtol=0, atol=FLOAT64_REL * float(alone["loss"].detach()))
    # the old normalisation stays available: the mean over all mapped layers, shared among the modules
    old, _ = in_float64(build("vqa", smoke_data["vqa"], layer_weight=2.5, layer_reduction="layer_mean")[0], batch)
    mean_all = old.compute(batch, MODULES)
    assert mean_all["layer_loss"] < everything["layer_loss"]


def test_vision_arm_covers_the_attentional_poolers_tokens(smoke_data):
    with_pool, train = build("vqa", smoke_data["vqa"])
    without, _ = build("vqa", smoke_data["vqa"], vision_pooler=False)
    batch = fixed_batch(train, range(4))
    with_pool.eval()
    with torch.no_grad(), FeatureTaps(with_pool.student, {"vision": [0]}, pooler=True) as taps:
        with_pool.student(batch)
        decoder_sees = with_pool.student.coca.visual(batch["image"])[1]  # image_embs: the decoder's cross-attention input
    assert torch.equal(taps.features[POOLER_KEY], decoder_sees)
    with_pool.train()
    a, b = with_pool.compute(batch, ("vision",)), without.compute(batch, ("vision",))
    n_layers = len(with_pool.layer_map["vision"])
    # the vision term is the mean over the mapped layers and the pooler's tokens
    pool_mse = (a["layer_loss_vision"] * (n_layers + 1) - b["layer_loss_vision"] * n_layers)
    assert pool_mse > 0


# ---------------------------------------------------------------------- KD that matches the head
@pytest.mark.numerics
def test_vqa_kd_is_per_answer_bernoulli_kl():
    torch.manual_seed(1)
    s, t = torch.randn(3, 7, dtype=torch.float64), torch.randn(3, 7, dtype=torch.float64)  # by hand vs library
    temperature = 2.0
    p, q = torch.sigmoid(t / temperature), torch.sigmoid(s / temperature)
    manual = (p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()).sum(-1).mean() * temperature ** 2
    assert same(prediction_kd(s, t, temperature, kind="sigmoid"), manual)
    assert prediction_kd(t, t, temperature, kind="sigmoid").abs() < 1e-12  # float64 rounding of 21 terms of size ~1
    # not the softmax KL over answers (which ignores each answer's absolute probability)
    assert not torch.allclose(prediction_kd(s, t, temperature, kind="softmax"), manual)
    assert prediction_kd(s + 5.0, s, temperature, kind="softmax").abs() < 1e-12  # softmax: blind to a shift
    assert prediction_kd(s + 5.0, s, temperature, kind="sigmoid") > 1.0  # sigmoid: sees it


# ---------------------------------------------------------------------- the probe
@pytest.mark.parametrize("task", ["vqa", "captions", "nlvr2"])
def test_probe_images_never_occur_in_training(smoke_data, task):
    data_dir = smoke_data[task]
    dataset = build_dataset(task, data_dir, "train", load_tokenizer(data_dir), 32, train=True)
    probe, train = split_probe(dataset, 4, seed=0)
    probe_images = {k for i in probe for k in dataset.image_keys(i)}
    train_images = {k for i in train for k in dataset.image_keys(i)}
    assert len(probe) == 4 and probe_images and not probe_images & train_images
    assert len(probe_images) == 4 * len(dataset.image_keys(probe[0]))  # one probe example per image
    # every example that shows no probe image trains (nothing else is dropped)
    assert len(train) == sum(1 for i in range(len(dataset)) if not set(dataset.image_keys(i)) & probe_images)
    assert len(train) < len(dataset) - len(probe) or task == "nlvr2"  # items sharing a probe image left too
    # the same probe for every method and seed; another probe_seed draws another one
    assert split_probe(dataset, 4, seed=0) == (probe, train)
    assert split_probe(dataset, 4, seed=1)[0] != probe


def test_probe_larger_than_the_held_out_images_allow_is_rejected(smoke_data, smoke_config_path):
    data_dir = smoke_data["vqa"]
    dataset = build_dataset("vqa", data_dir, "train", load_tokenizer(data_dir), 32, train=True)
    with pytest.raises(ConfigError, match="distill.probe_size"):
        split_probe(dataset, len(dataset), seed=0)
    with pytest.raises(ConfigError, match="distill.probe_size"):  # at config load, for synthetic data
        load_config(smoke_config_path, ["distill.probe_size=40"])


# ---------------------------------------------------------------------- rounds, rewards, frozen teacher
class CountingProbe:
    def __init__(self, probe):
        self.probe, self.calls = probe, 0

    def losses(self):
        self.calls += 1
        return self.probe.losses()


def run_rounds(smoke_data, tmp_path, policy_name, measure=True, steps=6, **policy_options):
    objective, train = build("vqa", smoke_data["vqa"])
    probe_idx, train_idx = split_probe(train, 4, seed=0)
    runtime = Runtime(device=torch.device("cpu"))
    probe = CountingProbe(Probe(objective, fixed_batch(train, probe_idx), runtime))
    policy = make_policy(policy_name, 3, 0, **policy_options)
    controller = RoundController(policy, [(m,) for m in MODULES], 2, "probe", probe.losses,
                                 lambda modules: setattr(objective, "active", tuple(modules)), runtime, measure=measure)
    teacher_before = {k: v.clone() for k, v in objective.teacher.state_dict().items()}
    spec = TrainSpec(steps=steps, batch_size=4, lr=1e-3, warmup_steps=0, checkpoint_every=100, log_every=1)
    fit(objective, torch.utils.data.Subset(train, train_idx), spec, runtime, tmp_path / "run", 0,
        {"test": policy_name}, callbacks=controller)
    rows = list(csv.DictReader(open(tmp_path / "run" / "train_log.inprogress.csv")))
    return rows, probe, objective, teacher_before, policy


def test_logged_reward_is_the_formula_on_the_logged_probe_losses(smoke_data, tmp_path):
    rows, probe, objective, teacher_before, policy = run_rounds(smoke_data, tmp_path, "optima")
    rounds = [r for r in rows if r["round"]]
    assert [int(r["round"]) for r in rounds] == [0, 1, 2]
    for previous, row in zip([None] + rounds, rounds):
        before, after = float(row["probe_before"]), float(row["probe_loss"])
        assert float(row["reward"]) == relative_decrement(before, after) == (before - after) / before
        if previous is not None:  # the round starts where the previous one ended
            assert before == float(previous["probe_loss"])
    # the steps of a round distil only the round's module
    for row in rows:
        arm = next(r["arm"] for r in rounds if int(r["round"]) == (int(row["step"]) - 1) // 2)
        assert {m for m in MODULES if row[f"layer_loss_{m}"]} == {arm}
    assert probe.calls == 4  # once before the first round, then once per round
    assert float(rows[-1]["probe_s"]) > 0
    # the policy saw every reward but the warm-up round's
    assert policy.rounds == 3 and sum(policy.plays) == 2
    # the frozen teacher never changes
    after = objective.teacher.state_dict()
    assert all(torch.equal(teacher_before[k], after[k]) for k in teacher_before)
    assert all(not p.requires_grad for p in objective.teacher.parameters())


@pytest.mark.parametrize("policy_name, options", [("uniform", {}), ("layerwise", {}), ("fixed", {"arm": 1})])
def test_policies_that_ignore_rewards_never_run_the_probe(smoke_data, tmp_path, policy_name, options):
    rows, probe, *_ = run_rounds(smoke_data, tmp_path, policy_name, measure=False, steps=4, **options)
    assert probe.calls == 0
    assert all(not r["reward"] and not r["probe_loss"] and float(r["probe_s"]) == 0.0 for r in rows)
    assert [r["arm"] for r in rows if r["round"]] and all(r["arm"] for r in rows if r["round"])


# ---------------------------------------------------------------------- one OPTIMA, memory shorter than the run
def test_every_shipped_config_uses_the_one_optima():
    defaults = {f.name: f.default for f in dataclasses.fields(OptimaOptions)}
    for path in CONFIGS:
        block = yaml.safe_load(path.read_text())["distill"]["optima"]
        assert block == defaults, f"{path.name}: distill.optima differs from OptimaOptions' defaults"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_optima_forgets_within_its_run(path):
    config = load_config(path)
    distill = config["distill"]
    for name in distill["run"]:
        if distill["methods"][name]["policy"] == "optima":
            rounds = distill["steps"] // distill["methods"][name].get("round_steps", distill["round_steps"])
            options = make_policy("optima", 3, 0, **{**distill["optima"],
                                                     **distill["methods"][name].get("options", {})}).options
            assert options.memory_rounds() < rounds, f"{path.name}: {name}"
    assert not memory_warnings(config)


def test_default_run_gives_the_policy_at_least_20_rounds():
    distill = load_config(REPO / "params.yaml")["distill"]
    assert distill["steps"] // distill["round_steps"] >= 20


def test_window_not_shorter_than_the_run_warns_naming_the_keys(smoke_config_path):
    with pytest.warns(ConfigWarning, match=r"distill\.optima\.window=50.*only 10"):
        load_config(smoke_config_path, ["distill.optima.window=50"])
    with pytest.warns(ConfigWarning, match=r"distill\.optima\.gamma=0\.95"):  # memory 1/(1-gamma) = 20 rounds
        load_config(smoke_config_path, ["distill.optima.window=null", "distill.optima.gamma=0.95"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_config(smoke_config_path)
    proc = subprocess.run([sys.executable, "-m", "optima", "config", "--config", str(smoke_config_path),
                           "--set", "distill.optima.window=50"], capture_output=True, text=True)
    assert proc.returncode == 0 and "warning:" in proc.stderr and "distill.optima.window=50" in proc.stderr


@pytest.mark.parametrize("override, culprit", [
    ("distill.optima.window=0", "'window'"),
    ("distill.optima.gamma=1.0", "'gamma'"),
    ("distill.optima.gamma=0", "'gamma'"),
    ("distill.optima.gamma=0.9", "'window' (8) and 'gamma' (0.9)"),
    ("distill.optima.credit=centred", "'credit'"),
    ("distill.optima.warmup_rounds=-1", "'warmup_rounds'"),
    ("distill.layer_reduction=mean", "distill.layer_reduction"),
    ("distill.probe_seed=-1", "distill.probe_seed"),
])
def test_bad_policy_and_fairness_keys_are_rejected_at_load(smoke_config_path, override, culprit):
    with pytest.raises(ConfigError) as info:
        load_config(smoke_config_path, [override])
    assert culprit in str(info.value)


def test_config_and_rounds_do_not_import_each_other():
    code = ("import sys; import optima.config; "
            "print(any(m.startswith('optima.distill') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    assert "optima.distill" not in (REPO / "optima/config.py").read_text()
    assert math.isfinite(OptimaOptions().memory_rounds())

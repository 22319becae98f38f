"""Bad inputs and faults (docs/faults.md): each gives one clear line naming the file or key and what to do, a
non-zero exit, and nothing that looks complete on disk; or, where recovery is possible (a bad latest checkpoint,
a stale temporary file), recovery with a warning. Fault injection: a patched writer raising OSError(ENOSPC) or
EROFS for a full disk or a read-only folder, SIGKILL for interruption, bit flips and truncation for corruption.

The unit tests run in a second; the end-to-end ones (marked slow) run the verbs on the smoke teacher."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from optima import io as oio
from optima.distill import checkpoint as ckpt
from optima.errors import CheckpointError, ConfigError, DataError, OutputError, RunBusyError, TrainingError

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "config" / "smoke.yaml"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def leftovers(folder: Path) -> list[str]:
    """Temporary files or folders anywhere under ``folder`` (a write that did not finish)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name.endswith(".tmp"))


def full_disk(monkeypatch, after: int = 0, code: int = errno.ENOSPC):
    """Every write through optima.io fails once ``after`` bytes are written (a full disk, a read-only folder)."""
    written = [0]

    def write(handle, data):
        written[0] += len(data)
        if written[0] > after:
            raise OSError(code, os.strerror(code))
        return handle.write(data)

    monkeypatch.setattr(oio, "_raw_write", write)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------------------------------ writes (items 5, 7, 11)


def test_atomic_outputs_honour_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        oio.atomic_write_text(tmp_path / "a.txt", "x")
        oio.atomic_write_with(tmp_path / "b.pt", lambda handle: torch.save({"x": 1}, handle))
        with oio.atomic_directory(tmp_path / "folder") as tmp:
            (tmp / "f").write_text("y")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.txt").st_mode) == 0o640  # mkstemp alone gives 0600
    assert stat.S_IMODE(os.stat(tmp_path / "b.pt").st_mode) == 0o640
    assert stat.S_IMODE(os.stat(tmp_path / "folder").st_mode) == 0o750
    oio.atomic_write_text(tmp_path / "c.txt", "x")  # the usual 022: readable by everyone, as open() makes it
    assert stat.S_IMODE(os.stat(tmp_path / "c.txt").st_mode) == 0o666 & ~old


@pytest.mark.parametrize("write", ["text", "torch.save", "checkpoint"])
def test_disk_full_names_the_file_and_leaves_nothing_half_written(tmp_path, monkeypatch, write):
    (tmp_path / "old.json").write_text("{}")
    full_disk(monkeypatch, after=100)
    with pytest.raises(OutputError, match=r"cannot write: no space left on the device \(the disk is full, ENOSPC") as err:
        if write == "text":
            oio.atomic_write_text(tmp_path / "out.json", "x" * 1000)
        elif write == "torch.save":  # torch.save hides the OSError behind `unexpected pos`
            oio.atomic_write_with(tmp_path / "state.pt", lambda handle: torch.save({"x": torch.zeros(1000)}, handle))
        else:
            model = torch.nn.Linear(4, 4)
            optimizer = torch.optim.AdamW(model.parameters())
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
            from optima.runtime import rng_state

            ckpt.save_checkpoint(tmp_path, 4, {"objective": model}, optimizer, scheduler, rng_state(), {}, "step\n")
    message = str(err.value)
    assert "\n" not in message and str(tmp_path) in message
    assert leftovers(tmp_path) == [] and not (tmp_path / "checkpoints" / "step_0000004").exists()
    assert not (tmp_path / "out.json").exists() and (tmp_path / "old.json").read_text() == "{}"


def test_a_read_only_folder_names_the_file(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(oio.tempfile, "mkstemp", read_only)
    with pytest.raises(OutputError, match=r"out\.json: cannot write: the folder is not writable \(Read-only"):
        oio.atomic_write_json(tmp_path / "out.json", {})
    with pytest.raises(OutputError, match=r"metrics_test\.json: cannot write: the folder is not writable"):
        oio.check_writable(tmp_path / "run" / "metrics_test.json")


def test_check_writable_finds_a_full_disk_before_anything_is_computed(tmp_path, monkeypatch):
    full_disk(monkeypatch)
    with pytest.raises(OutputError, match="disk is full"):
        oio.check_writable(tmp_path / "metrics_test.json")
    assert list(tmp_path.iterdir()) == []


def test_a_killed_write_leaves_a_tmp_that_the_next_write_removes_with_a_warning(tmp_path):
    target = tmp_path / "metrics.json"
    script = ("import sys, time\n"
              "import optima.io as o\n"
              "def slow(handle, data):\n"
              "    handle.write(data[:10]); handle.flush(); time.sleep(120)\n"
              "o._raw_write = slow\n"
              "o.atomic_write_text(sys.argv[1], 'x' * 100)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(target)], env=ENV)
    deadline = time.time() + 60
    while not leftovers(tmp_path):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not target.exists() and len(leftovers(tmp_path)) == 1  # nothing that looks complete
    legacy = tmp_path / ".metrics.json.abcd1234.tmp"  # an older writer's name (no pid)
    legacy.write_text("x")
    live = tmp_path / f".metrics.json.{oio._host()}-{os.getpid()}.zz.tmp"  # a write still running: kept
    live.write_text("x")
    with pytest.warns(oio.StaleFileWarning, match=r"removed a temporary file left by an interrupted write"):
        oio.atomic_write_text(target, "done")
    assert target.read_text() == "done" and leftovers(tmp_path) == [live.name]


def test_stale_checkpoint_folders_of_a_dead_process_are_removed(tmp_path):
    stale = tmp_path / "checkpoints" / f".step_0000004.{oio._host()}-{dead_pid()}.abcd.tmp"
    stale.mkdir(parents=True)
    (stale / "weights.safetensors").write_bytes(b"half")
    with pytest.warns(oio.StaleFileWarning):
        with oio.atomic_directory(tmp_path / "checkpoints" / "step_0000004") as tmp:
            (tmp / "meta.json").write_text("{}")
    assert not stale.exists() and (tmp_path / "checkpoints" / "step_0000004" / "meta.json").is_file()


def test_the_live_train_log_on_a_full_disk_names_the_file(tmp_path, monkeypatch):
    from optima.distill.trainlog import TrainLog

    log = TrainLog(tmp_path / "train_log.inprogress.csv")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("builtins.open", full)
    with pytest.raises(OutputError, match=r"train_log\.inprogress\.csv: cannot write: no space left"):
        log.append(step=1, loss=1.0)


# ------------------------------------------------------------------------------------------ checkpoints (item 4)


class Regression(torch.utils.data.Dataset):
    def __init__(self, n=64):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(n, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


class Objective(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 1))

    def forward(self, batch):
        task = torch.nn.functional.mse_loss(self.net(batch["x"]).squeeze(-1), batch["y"])
        return {"loss": task, "task_loss": task}


@pytest.fixture
def loop_parts():
    """A regression objective trained 12 steps, checkpoints at 8 and 12 (as tests/test_loop.py)."""
    from optima.distill.loop import TrainSpec
    from optima.runtime import Runtime

    return {"spec": TrainSpec(steps=12, batch_size=8, lr=1e-2, warmup_steps=2, checkpoint_every=4, log_every=2),
            "cpu": Runtime(device=torch.device("cpu")), "Objective": Objective, "Regression": Regression}


def _train(parts, run_dir, spec=None, objective=None):
    from optima.distill.loop import fit
    from optima.runtime import seed_everything

    seed_everything(0)
    objective = objective or parts["Objective"]()
    log = fit(objective, parts["Regression"](), spec or parts["spec"], parts["cpu"], run_dir, seed=0,
              fingerprint={"a": 1})
    return objective, log


def _flip_a_bit(path: Path, offset_from_end: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x10
    path.write_bytes(bytes(data))


CORRUPTIONS = {
    "truncated meta.json": lambda step: (step / "meta.json").write_text((step / "meta.json").read_text()[:40]),
    "missing train_log.csv": lambda step: (step / "train_log.csv").unlink(),
    "bit flip in the weights": lambda step: _flip_a_bit(step / "weights.safetensors"),
    "bit flip in state.pt": lambda step: _flip_a_bit(step / "state.pt", 300),
}


def test_checkpoints_record_the_sha256_of_their_files(loop_parts, tmp_path):
    _train(loop_parts, tmp_path)
    for step in ckpt.checkpoint_dirs(tmp_path):
        meta = json.loads((step / "meta.json").read_text())
        assert set(meta["checksums"]) == {"weights.safetensors", "state.pt", "train_log.csv"}
        for name, digest in meta["checksums"].items():
            assert ckpt.sha256_file(step / name) == digest


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_a_bad_latest_checkpoint_falls_back_to_the_previous_one(loop_parts, tmp_path, corruption):
    from optima.distill.trainlog import TIMING_COLUMNS

    reference, ref_log = _train(loop_parts, tmp_path / "ref")
    # a run killed after its checkpoint at step 12 was written but before the outputs: resume from it
    _train(loop_parts, tmp_path / "run")
    latest = ckpt.latest_checkpoint(tmp_path / "run")
    CORRUPTIONS[corruption](latest)
    with pytest.warns(ckpt.CheckpointWarning, match=r"skipped checkpoint .*step_0000012, resuming from the previous "
                                                    r"one .*step_0000008 \(delete .*step_0000012"):
        resumed, log = _train(loop_parts, tmp_path / "run")
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)  # the same result as an uninterrupted run, not a silently different one
    strip = [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in log.rows]
    assert strip == [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in ref_log.rows]
    assert ckpt.read_checkpoint(ckpt.latest_checkpoint(tmp_path / "run"))  # rewritten whole


def test_every_checkpoint_bad_is_one_clear_error_saying_what_to_delete(loop_parts, tmp_path):
    _train(loop_parts, tmp_path)
    for step in ckpt.checkpoint_dirs(tmp_path):
        _flip_a_bit(step / "weights.safetensors")
    with pytest.raises(CheckpointError, match=r"weights\.safetensors: checksum mismatch .*no checkpoint of .* can be "
                                              r"read: delete .*checkpoints to train from the start"):
        _train(loop_parts, tmp_path)


# ------------------------------------------------------------------------------------------ divergence (items 2, 3)


class Poison:
    """Callbacks that set a weight to NaN after step ``at`` (an update that diverges without a NaN loss)."""

    def __init__(self, objective, at):
        self.objective, self.at = objective, at

    def before_step(self, step):
        pass

    def after_step(self, step, losses):
        if step + 1 == self.at:
            with torch.no_grad():
                self.objective.net[0].weight[0, 0] = float("nan")
        return {}

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


@pytest.mark.parametrize("at, message", [
    (12, r"loss term 'loss' is nan after the last update \(step 12\)"),
    (4, r"parameter 'net\.0\.weight' is not finite after step 4"),
])
def test_weights_that_diverge_stop_training_naming_the_term_or_parameter_and_step(loop_parts, tmp_path, at, message):
    from optima.distill.loop import fit
    from optima.runtime import seed_everything

    seed_everything(0)
    objective = loop_parts["Objective"]()
    with pytest.raises(TrainingError, match=message):
        fit(objective, loop_parts["Regression"](), loop_parts["spec"], loop_parts["cpu"], tmp_path, seed=0,
            fingerprint={"a": 1}, callbacks=Poison(objective, at))
    for step in ckpt.checkpoint_dirs(tmp_path):  # no checkpoint holds the diverged weights
        assert step.name < f"step_{at:07d}"


def test_a_nan_reward_is_a_training_error_naming_the_round_and_term():
    from optima.bandits.registry import make_policy
    from optima.distill.rounds import RoundController
    from optima.runtime import Runtime

    policy = make_policy("optima", 3, seed=0)
    probe = iter([{"loss": 1.0, "task_loss": 1.0}, {"loss": float("nan"), "task_loss": float("nan")}])
    rounds = RoundController(policy, [("vision",), ("text",), ("multimodal",)], 1, "probe", lambda: next(probe),
                             lambda modules: None, Runtime(device=torch.device("cpu")))
    rounds.before_step(0)
    with pytest.raises(TrainingError, match=r"probe reward of round 0 \(step 1\) is nan \(.*probe_loss is nan"):
        rounds.after_step(0, {"loss": 1.0})


# ------------------------------------------------------------------------------------------ run directories (1, 11)


def _finished_run(run: Path, method="optima", fingerprint=None) -> Path:
    run.mkdir(parents=True)
    info = {"task": "vqa", "method": method, "seed": 0, "role": "student", "fingerprint": fingerprint or {"lr": 1}}
    (run / "run_info.json").write_text(json.dumps(info))
    (run / "model.safetensors").write_bytes(b"weights")
    (run / "metrics_test.json").write_text("{}")
    (run / "checkpoints").mkdir()
    return run


def _claim(run, method="optima", fingerprint=None, force=False):
    from optima.runs import claim_run_dir
    from optima.runtime import Runtime

    identity = {"task": "vqa", "method": method, "seed": 0, "role": "student"}
    with claim_run_dir(run, Runtime(device=torch.device("cpu")), identity, fingerprint or {"lr": 1}, force):
        pass


def test_a_finished_run_of_another_method_or_config_is_refused_and_force_clears_it(tmp_path):
    run = _finished_run(tmp_path / "st")
    _claim(run)  # the same command again: allowed (it resumes, or only evaluates again)
    with pytest.raises(CheckpointError, match=r"st: holds a finished run \(role 'student', task 'vqa', method 'optima', "
                                              r"seed 0\) .*\(differs in: method\); refusing to overwrite it: .*--force"):
        _claim(run, method="layerwise")
    with pytest.raises(CheckpointError, match=r"differs in: lr\)"):
        _claim(run, fingerprint={"lr": 2})
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "metrics_test.json", "model.safetensors",
                                                       "run_info.json"]  # untouched
    _claim(run, method="layerwise", force=True)
    assert list(run.iterdir()) == []  # cleared whole: no metrics_test.json of the old run stays


def test_force_never_clears_a_folder_that_is_not_a_run_directory(tmp_path):
    (tmp_path / "thesis.tex").write_text("years of work")
    with pytest.raises(CheckpointError, match=r"--force clears only run directories, and this one holds thesis\.tex"):
        _claim(tmp_path, force=True)
    assert (tmp_path / "thesis.tex").exists()


def test_a_locked_run_directory_refuses_a_second_process_naming_the_lock(tmp_path):
    from optima.runs import LOCK_FILE, run_lock

    script = ("import sys\nfrom optima.runs import run_lock\nfrom optima.errors import RunBusyError\n"
              "try:\n    run_lock(sys.argv[1]).__enter__()\nexcept RunBusyError as exc:\n    print(exc); sys.exit(2)\n")
    with run_lock(tmp_path / "run") as lock:
        assert lock == tmp_path / "run" / LOCK_FILE
        proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "run")], capture_output=True, text=True,
                              env=ENV)
        assert proc.returncode == 2, proc.stderr
        assert f"another optima process is writing this run directory (it holds the lock {lock}: pid {os.getpid()}" \
            in proc.stdout
        with pytest.raises(RunBusyError):  # the same process, twice: also refused
            run_lock(tmp_path / "run").__enter__()
    assert not (tmp_path / "run").exists()  # made by the lock, left empty: removed with it
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "run")], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # released


# ------------------------------------------------------------------------------------------ config (items 8, 9, 10)


@pytest.mark.parametrize("overrides, message", [
    (["distill.steps=0"], r"distill\.steps: 0 steps train nothing"),
    (["finetune.overrides.vqa.steps=0"], r"finetune\.overrides\.vqa\.steps: 0 steps train nothing"),
    (["distill.round_steps=11"], r"distill\.methods\.optima: distill\.round_steps \(11\) is more than distill\.steps "
                                 r"\(10\): no bandit round completes"),
    (["distill.run=[uniform]", "distill.methods.uniform.round_steps=20"],
     r"distill\.methods\.uniform: distill\.methods\.uniform\.round_steps \(20\) is more than distill\.steps"),
    (["distill.methods.../../evil={policy: optima}"], r"distill\.methods\.\.\./\.\./evil: not a dotted key path"),
    (["distill.methods={'../../evil': {policy: optima}}", "distill.run=['../../evil']"],
     r"distill\.methods: method name '\.\./\.\./evil' may hold only letters, digits, _ and -"),
    (["distill.methods.pretrain={policy: none}"], r"method name 'pretrain' is reserved"),
])
def test_configs_that_would_train_nothing_useful_or_write_elsewhere_fail_at_load(overrides, message):
    from optima.config import load_config

    with pytest.raises(ConfigError, match=message) as err:
        load_config(SMOKE, overrides)
    assert "\n" not in str(err.value)


def test_a_warmup_longer_than_the_run_warns_naming_the_keys():
    from optima.config import ConfigWarning, load_config

    with pytest.warns(ConfigWarning, match=r"distill\.warmup_steps \(20\) is more than distill\.steps \(10\): the "
                                           r"learning rate never reaches distill\.lr"):
        load_config(SMOKE, ["distill.warmup_steps=20"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_config(SMOKE)


def test_a_method_the_verb_runs_is_checked_for_rounds_too():
    """distill.run is checked at load; a method only named on the command line is checked by the verb."""
    from optima.config import load_config, method_round_problem

    config = load_config(SMOKE, ["distill.methods.uniform.round_steps=20"])  # uniform is not in distill.run
    assert "no bandit round completes" in method_round_problem(config, "uniform")
    assert method_round_problem(config, "layerwise") is None and method_round_problem(config, "fixed-text") is None


def test_student_layers_above_the_teachers_depth_name_the_key():
    from optima.models.student import resolve_layer_map

    with pytest.raises(ConfigError, match=r"model\.student_layers\.vision: 9 layers is more than the teacher's vision "
                                          r"module has \(2\)"):
        resolve_layer_map({"vision": 2, "text": 2, "multimodal": 2}, {"vision": 9, "text": 1, "multimodal": 1})


def test_cuda_without_a_gpu_names_the_key(monkeypatch):
    from optima.runtime import init_runtime

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"runtime\.device: cuda, but torch finds no CUDA GPU"):
        init_runtime("cuda")


def test_hf_hub_offline_0_does_not_count_as_set(monkeypatch):
    from optima.models.factory import hub_offline, pretrained_download_hint

    for value, offline in (("1", True), ("ON", True), ("true", True), ("0", False), ("", False), ("false", False)):
        monkeypatch.setenv("HF_HUB_OFFLINE", value)
        assert hub_offline() is offline, value
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert "HF_HUB_OFFLINE is set" not in pretrained_download_hint({"url": "https://example.org/w.pt"})


@pytest.mark.parametrize("value", ["1000000000.0", "-0.5"])
def test_tables_reject_metric_values_outside_their_range(tmp_path, value):
    from optima.paper.results import read_runs

    path = tmp_path / "runs.csv"
    path.write_text("task,method,seed,role,split,metric,value\n"
                    "snli_ve,teacher,0,teacher,test,accuracy,0.5\n"
                    f"snli_ve,optima,0,student,test,accuracy,{value}\n")
    with pytest.raises(DataError, match=rf"runs\.csv: line 3: accuracy of task snli_ve is {value}, outside \[0, 1\]"):
        read_runs(path)


# ------------------------------------------------------------------------------------------ data (items 8, 11)


def _copy_data(smoke_data, task, dest) -> Path:
    return Path(shutil.copytree(smoke_data[task], dest))


def test_an_empty_training_split_names_the_file(smoke_data, tmp_path):
    from optima.tasks import build_dataset

    data = _copy_data(smoke_data, "snli_ve", tmp_path / "snli_ve")
    (data / "snli_ve_train.jsonl").write_text("")
    with pytest.raises(DataError, match=r"snli_ve_train\.jsonl: the train split of snli_ve has no examples"):
        build_dataset("snli_ve", data, "train")


def test_a_corrupt_validation_image_is_found_before_training(smoke_data, tmp_path):
    from optima.config import load_config
    from optima.data.tokenizers import load_tokenizer
    from optima.eval.evaluate import validation_set

    data = _copy_data(smoke_data, "snli_ve", tmp_path / "snli_ve")
    first = json.loads((data / "snli_ve_val.jsonl").read_text().splitlines()[0])
    image = next((data / "images").glob(f"{first['Flickr30K_ID']}.*"))
    image.write_bytes(image.read_bytes()[:30])  # truncated
    with pytest.raises(DataError, match=rf"{image.name}: cannot decode image"):
        validation_set("snli_ve", data, load_tokenizer(data), load_config(SMOKE))


# ------------------------------------------------------------------------------------------ the verbs, end to end


def optima(*args, check=False, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "optima", *map(str, args)], capture_output=True, text=True, env=ENV,
                          **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"optima {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def clean_error(proc, *parts: str) -> str:
    """The one error line of a failed verb (exit 2, no traceback), holding every part."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(lines) == 1, proc.stderr[-3000:]
    line = lines[0].split(": error: ", 1)[1]
    for part in parts:
        assert part in line, (part, line)
    return line


@pytest.mark.parametrize("case", ["method name", "rounds"])
def test_verbs_check_method_names_and_rounds_before_writing_anything(tmp_path, case):
    import yaml

    config = yaml.safe_load(SMOKE.read_text())
    if case == "method name":
        config["distill"]["methods"]["../../evil"] = {"policy": "optima"}
        method, expected = "../../evil", "method name '../../evil' may hold only letters, digits, _ and -"
    else:  # a method the pipeline does not run (not checked at load), named on the command line
        config["distill"]["methods"]["uniform"]["round_steps"] = 20
        method, expected = "uniform", "distill.methods.uniform.round_steps (20) is more than distill.steps (10)"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    root = tmp_path / "deep" / "students"
    proc = optima("distill", "vqa", "--method", method, "--seed", 0, "--config", tmp_path / "config.yaml",
                  "--data", tmp_path / "data", "--teacher", tmp_path / "teacher", "--out-root", root, "--threads", 1)
    clean_error(proc, expected)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["config.yaml"]  # nothing written, inside or outside


@pytest.fixture
def world(smoke_teacher):
    return smoke_teacher


def distill(world, out, method="layerwise", *extra, data=None):
    return optima("distill", "vqa", "--method", method, "--seed", 0, "--config", SMOKE,
                  "--data", data or world["root"] / "data/vqa", "--teacher", world["root"] / "teacher_vqa",
                  "--out", out, "--threads", 1, *extra)


@pytest.mark.slow
def test_out_onto_a_finished_run_of_another_method_is_refused_until_force(world, tmp_path):
    run, short = tmp_path / "st", ("--set", "distill.steps=2", "--set", "distill.checkpoint_every=1")
    assert distill(world, run, "uniform", *short).returncode == 0
    (run / "metrics_test.json").write_text('{"method": "uniform"}')  # as `optima evaluate` leaves it
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    clean_error(distill(world, run, "layerwise", *short), f"{run}: holds a finished run", "method 'uniform'",
                "differs in: method", "--force")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before  # untouched
    assert distill(world, run, "layerwise", "--force", *short).returncode == 0
    assert json.loads((run / "run_info.json").read_text())["method"] == "layerwise"
    assert not (run / "metrics_test.json").exists()  # cleared whole: no mixed directory


@pytest.mark.slow
def test_out_onto_a_teacher_is_refused(world, tmp_path):
    teacher = Path(shutil.copytree(world["root"] / "teacher_vqa", tmp_path / "teacher"))
    before = sorted(str(p.relative_to(teacher)) for p in teacher.rglob("*"))
    clean_error(distill(world, teacher, "layerwise"), "holds a finished run (role 'teacher'", "differs in: role")
    assert sorted(str(p.relative_to(teacher)) for p in teacher.rglob("*")) == before


@pytest.mark.slow
@pytest.mark.parametrize("method, message", [
    ("layerwise", "loss term 'task_loss' is nan after the last update (step 1)"),
    ("optima", "the probe reward of round 0 (step 1) is nan (probe_loss is nan"),
])
def test_a_diverged_student_ends_with_a_clean_error_and_no_metrics(world, tmp_path, method, message):
    proc = distill(world, tmp_path / "run", method, "--set", "distill.lr=1e6", "--set", "distill.steps=1")
    clean_error(proc, message, "stopped")
    assert not (tmp_path / "run" / "metrics.json").exists() and not (tmp_path / "run" / "model.safetensors").exists()


@pytest.mark.slow
def test_evaluate_refuses_nonfinite_weights_or_logits_and_writes_nothing(world, tmp_path):
    from safetensors.torch import load_file, save_file

    runs = {}
    for name, value in (("nan", float("nan")), ("overflow", 3e38)):
        run = Path(shutil.copytree(world["root"] / "teacher_vqa", tmp_path / name))
        tensors = load_file(run / "model.safetensors")
        tensors["head.classifier.weight"] = torch.full_like(tensors["head.classifier.weight"], value)
        save_file(tensors, run / "model.safetensors", metadata={"format": "optima.model/1"})
        runs[name] = run
    good = Path(shutil.copytree(world["root"] / "teacher_vqa", tmp_path / "good"))
    base = ("evaluate", "--config", SMOKE, "--data", world["root"] / "data/vqa", "--threads", 1)
    clean_error(optima(*base, "--run", good, "--run", runs["nan"]),
                f"{runs['nan']}: the model's weight 'head.classifier.weight' is not finite", "nothing was written")
    clean_error(optima(*base, "--run", runs["overflow"]), f"{runs['overflow']}: the model's logits are not finite")
    assert not list(tmp_path.rglob("metrics_test.json"))  # not even the good run's: it fails before any scoring


@pytest.mark.slow
def test_evaluate_checks_its_outputs_before_scoring(world, tmp_path):
    (tmp_path / "file").write_text("")
    proc = optima("evaluate", "--config", SMOKE, "--data", world["root"] / "data/vqa", "--threads", 1,
                  "--run", world["root"] / "teacher_vqa", "--out", tmp_path / "file" / "metrics.json")
    clean_error(proc, f"{tmp_path / 'file' / 'metrics.json'}: cannot write: a file stands where its folder should be")
    assert "overall=" not in proc.stdout  # nothing was scored


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["ENOSPC", "EROFS"])
def test_a_full_disk_or_read_only_folder_during_distill_names_the_file(world, tmp_path, monkeypatch, capsys, fault):
    from optima.cli import main

    if fault == "ENOSPC":  # the first checkpoint (step 5) does not fit
        full_disk(monkeypatch, after=200_000)
    else:
        def read_only(*args, **kwargs):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))

        monkeypatch.setattr(oio.tempfile, "mkstemp", read_only)
    run = tmp_path / "run"
    rc = main(["distill", "vqa", "--method", "layerwise", "--seed", "0", "--config", str(SMOKE), "--data",
               str(world["root"] / "data/vqa"), "--teacher", str(world["root"] / "teacher_vqa"), "--out", str(run),
               "--threads", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    if fault == "ENOSPC":
        assert f"{run}/checkpoints/step_0000005/" in err and "the disk is full" in err, err[-2000:]
    else:
        assert f"{run}/.optima.lock: cannot write: the folder is not writable (Read-only file system)" in err, err[-2000:]
    assert leftovers(tmp_path) == [] and not (run / "metrics.json").exists() and not (run / "model.safetensors").exists()


@pytest.mark.slow
def test_a_second_distill_on_a_run_being_written_fails_naming_the_lock(world, tmp_path):
    from optima.runs import run_lock

    run = tmp_path / "run"
    with run_lock(run) as lock:  # as a first `optima distill ... --out run` holds it while it trains
        clean_error(distill(world, run), f"{run}: another optima process is writing this run directory (it holds "
                                         f"the lock {lock}: pid {os.getpid()}")
        assert [p.name for p in run.iterdir()] == [lock.name]


@pytest.mark.slow
def test_a_bit_flip_in_the_latest_checkpoint_falls_back_and_ends_with_the_same_metrics(world, tmp_path):
    run = tmp_path / "run"
    assert distill(world, run).returncode == 0
    metrics = (run / "metrics.json").read_text()
    latest = ckpt.latest_checkpoint(run)
    _flip_a_bit(latest / "weights.safetensors", 1000)
    proc = distill(world, run)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (f"warning: {latest / 'weights.safetensors'}: checksum mismatch" in proc.stderr
            and f"resuming from the previous one {run / 'checkpoints' / 'step_0000005'}" in proc.stderr), proc.stderr
    assert (run / "metrics.json").read_text() == metrics  # not silently other metrics (0.396 -> 0.354 before)


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["corrupt validation image", "student deeper than the teacher"])
def test_problems_found_before_the_first_training_step(world, tmp_path, fault):
    from optima.data.tokenizers import load_tokenizer
    from optima.tasks import build_dataset

    data, extra = world["root"] / "data/vqa", ()
    if fault == "corrupt validation image":
        data = Path(shutil.copytree(data, tmp_path / "vqa"))
        image = Path(build_dataset("vqa", data, "val", load_tokenizer(data)).image_keys(0)[0])
        image.write_bytes(image.read_bytes()[:40])
        expected = f"{image}: cannot decode image"
    else:
        extra = ("--set", "model.student_layers={vision: 9, text: 1, multimodal: 1}")
        expected = "model.student_layers.vision: 9 layers is more than the teacher's vision module has (2)"
    run = tmp_path / "run"
    clean_error(distill(world, run, "layerwise", *extra, data=data), expected)
    assert not run.exists()  # not a step trained, nothing written


def test_docs_faults_has_a_test_for_every_row():
    """docs/faults.md: at least 25 bad inputs and faults, each row naming tests that exist."""
    import re

    text = (REPO / "docs" / "faults.md").read_text()
    rows = [line for line in text.splitlines() if re.match(r"^\| \d+ \|", line)]
    assert len(rows) >= 25
    defined = set()
    for path in (REPO / "tests").glob("test_*.py"):
        defined |= set(re.findall(r"^def (test_\w+)", path.read_text(), flags=re.M))
    for row in rows:
        named = re.findall(r"\b(test_\w+)\b(?!\.py)", row.rsplit("|", 2)[1])
        assert named, row
        missing = [name for name in named if name not in defined]
        assert not missing, (missing, row)

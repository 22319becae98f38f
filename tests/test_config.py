import subprocess
import sys

import pytest
import yaml

from optima.config import apply_overrides, load_config, merge_overlay, method_spec, read_overlay, validate
from optima.errors import ConfigError

CONFIGS = ["params.yaml", "config/smoke.yaml"]


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_configs_validate(repo_root, name):
    config = load_config(repo_root / name)
    assert config["tasks"]


def _write(tmp_path, config):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture()
def smoke(repo_root):
    return yaml.safe_load((repo_root / "config/smoke.yaml").read_text())


def test_typo_key_names_key_and_file(tmp_path, smoke):
    smoke["distill"]["windw"] = 3
    path = _write(tmp_path, smoke)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "distill.windw" in str(info.value)
    assert "unknown key" in str(info.value)


def test_top_level_typo(tmp_path, smoke):
    smoke["taks"] = ["vqa"]
    with pytest.raises(ConfigError, match=r"taks: unknown key"):
        load_config(_write(tmp_path, smoke))


def test_wrong_type_names_key(tmp_path, smoke):
    smoke["distill"]["steps"] = "many"
    with pytest.raises(ConfigError, match=r"distill\.steps: 'many' is not of type 'integer'"):
        load_config(_write(tmp_path, smoke))


def test_missing_required_key(tmp_path, smoke):
    del smoke["eval"]["split"]
    with pytest.raises(ConfigError, match=r"eval\.split: required key is missing"):
        load_config(_write(tmp_path, smoke))


@pytest.mark.parametrize("key,value,match", [
    ("tasks", [], r"tasks: \[\] should be non-empty"),
    ("tasks", ["vqa", "coco"], r"tasks: unknown task 'coco' \(known: captions, vqa"),
])
def test_bad_task_lists(tmp_path, smoke, key, value, match):
    smoke[key] = value
    with pytest.raises(ConfigError, match=match):
        load_config(_write(tmp_path, smoke))


def test_run_names_undefined_method(tmp_path, smoke):
    smoke["distill"]["run"] = ["optima", "optimus"]
    with pytest.raises(ConfigError, match=r"distill\.run: method 'optimus' is not defined"):
        load_config(_write(tmp_path, smoke))


def test_empty_seed_list(tmp_path, smoke):
    smoke["distill"]["seeds"] = []
    with pytest.raises(ConfigError, match=r"distill\.seeds"):
        load_config(_write(tmp_path, smoke))


def test_fixed_method_needs_module_arm(tmp_path, smoke):
    smoke["distill"]["methods"]["fixed-vision"]["options"]["arm"] = "audio"
    with pytest.raises(ConfigError, match=r"fixed-vision\.options\.arm"):
        load_config(_write(tmp_path, smoke))


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "broken.yaml"
    bad.write_text("seed: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_overrides(smoke):
    out = apply_overrides(smoke, ["distill.optima.window=3", "tasks=[vqa]", "distill.lr=3e-3"])
    assert out["distill"]["optima"]["window"] == 3 and out["tasks"] == ["vqa"]
    assert out["distill"]["lr"] == 0.003
    assert smoke["tasks"] != ["vqa"]  # the input is not modified
    with pytest.raises(ConfigError, match="unknown key 'nope'"):
        apply_overrides(smoke, ["nope.x=1"])
    with pytest.raises(ConfigError, match="expected KEY.PATH=VALUE"):
        apply_overrides(smoke, ["distill.steps"])


def test_finetune_overrides_apply_per_task(tmp_path, smoke):
    from optima.config import finetune_section

    vqa, nlvr2 = finetune_section(smoke, "vqa"), finetune_section(smoke, "nlvr2")
    assert vqa["steps"] == smoke["finetune"]["overrides"]["vqa"]["steps"] != nlvr2["steps"] == smoke["finetune"]["steps"]
    assert "overrides" not in vqa and vqa["lr"] == nlvr2["lr"]
    for override, match in ((["finetune.overrides.vqa.stepz=3"], r"finetune\.overrides\.vqa\.stepz: unknown key"),
                            (["finetune.overrides={vqa2: {steps: 3}}"], r"finetune\.overrides: unknown task 'vqa2'"),
                            (["finetune.overrides.vqa.steps=-1"], r"finetune\.overrides\.vqa\.steps: -1")):
        with pytest.raises(ConfigError, match=match):
            validate(apply_overrides(smoke, override), "smoke.yaml")


def test_method_spec_merges_optima_options(smoke):
    validate(smoke)
    spec = method_spec(smoke, "optima")
    assert spec["policy"] == "optima"
    assert spec["options"]["window"] == smoke["distill"]["optima"]["window"]
    finetune = method_spec(smoke, "finetune")
    assert finetune["kd_weight"] == 0.0 and finetune["layer_weight"] == 0.0
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        method_spec(smoke, "nope")


def test_cli_reports_config_error_with_exit_status(tmp_path, smoke):
    smoke["distill"]["windw"] = 3
    path = _write(tmp_path, smoke)
    proc = subprocess.run([sys.executable, "-m", "optima", "config", "--config", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "distill.windw: unknown key" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_policy_option_fails_at_load(tmp_path, smoke):
    smoke["distill"]["optima"]["windw"] = 3
    with pytest.raises(ConfigError, match=r"distill\.methods\.optima: .*unknown option 'windw'"):
        load_config(_write(tmp_path, smoke))
    smoke["distill"]["optima"].pop("windw")
    smoke["distill"]["optima"]["gamma"] = 0.9  # window and gamma together
    with pytest.raises(ConfigError, match=r"distill\.methods\.optima"):
        load_config(_write(tmp_path, smoke))


def test_overlay_merges_mappings_and_replaces_the_rest(tmp_path):
    base = {"paths": {"data": "d", "results": "r"}, "distill": {"run": ["a", "b"], "methods": {"a": {"policy": "x"}}}}
    merged = merge_overlay(base, {"paths": {"results": "r2"}, "distill": {"run": ["c"], "methods": {"c": {"policy": "y"}}}})
    assert merged == {"paths": {"data": "d", "results": "r2"},
                      "distill": {"run": ["c"], "methods": {"a": {"policy": "x"}, "c": {"policy": "y"}}}}
    assert base["paths"]["results"] == "r" and "c" not in base["distill"]["methods"]  # the base is not modified
    (tmp_path / "list.yaml").write_text("- a\n")
    with pytest.raises(ConfigError, match="list.yaml: a config overlay must be a mapping"):
        read_overlay(tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="none.yaml: config overlay not found"):
        read_overlay(tmp_path / "none.yaml")


def test_shipped_reward_overlay_runs_optima_with_each_reward(repo_root):
    """config/overlays/claims-rewards.yaml on config/claims.yaml: the claims run plus OPTIMA with the train and task
    rewards, everything else (steps, seeds, OPTIMA's options, teachers) the claims run's, results kept apart."""
    claims = load_config(repo_root / "config/claims.yaml")
    merged = validate(merge_overlay(claims, read_overlay(repo_root / "config/overlays/claims-rewards.yaml")))
    assert merged["distill"]["run"] == claims["distill"]["run"] + ["optima-train", "optima-task"]
    assert merged["paths"]["results"] != claims["paths"]["results"] and merged["paths"]["data"] == claims["paths"]["data"]
    def all_but_reward(name):
        return {k: v for k, v in method_spec(merged, name).items() if k not in ("reward", "name")}

    assert method_spec(merged, "optima")["reward"] == "probe"
    for name, reward in (("optima-train", "train"), ("optima-task", "task")):
        assert method_spec(merged, name)["reward"] == reward
        assert all_but_reward(name) == all_but_reward("optima")
    without = {k: v for k, v in merged.items() if k not in ("paths", "distill")}
    assert without == {k: v for k, v in claims.items() if k not in ("paths", "distill")}

"""Load a scale's config file, apply ``key.path=value`` overrides, validate against the JSON Schema.

Every error names the file and the dotted key path, e.g.
``config/smoke.yaml: distill.windw: unknown key (allowed: ...)``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
import warnings
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import yaml

from optima.errors import ConfigError

from optima.coca_modules import MODULES  # noqa: F401 (re-exported: optima.config.MODULES)
# at most this fraction of a task's training images is held out for the probe (the rest trains every method)
MAX_PROBE_FRACTION = 0.25
# a method name becomes a directory name (students/TASK/METHOD/), a table row and a dotted config key
METHOD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
# run_info.json's method of the teachers: no student method may be called so
RESERVED_METHODS = ("teacher", "pretrain")


class ConfigWarning(UserWarning):
    """A valid config that probably does not do what its author meant (e.g. a policy that never forgets)."""


def schema() -> dict:
    text = resources.files("optima").joinpath("schemas/config.schema.yaml").read_text()
    return yaml.safe_load(text)


def _dotted(path: Iterable[Any]) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _format_error(err, source: str) -> str:
    where = _dotted(err.absolute_path)
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        key = f"{where}.{extra[0]}" if err.absolute_path else extra[0]
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return f"{source}: {key}: unknown key{hint}"
    if err.validator == "required":
        missing = [k for k in err.validator_value if k not in err.instance]
        key = f"{where}.{missing[0]}" if err.absolute_path else missing[0]
        return f"{source}: {key}: required key is missing"
    return f"{source}: {where}: {err.message}"


def validate(config: dict, source: str = "<config>") -> dict:
    """Validate ``config`` in place-free fashion; raise ConfigError naming the first bad key."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        # the deepest-first message is usually the most specific one for oneOf failures, the
        # shallowest for unknown keys; report the shallowest and count the rest
        msg = _format_error(errors[0], source)
        if len(errors) > 1:
            msg += f" (and {len(errors) - 1} more problem(s))"
        raise ConfigError(msg)
    _check_cross_references(with_defaults(config), source)
    return config


def _resolve(node: dict, root: dict) -> dict:
    while "$ref" in node:  # local references only ("#/$defs/...")
        target = root
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _fill(instance: dict, node: dict, root: dict) -> None:
    for key, prop in node.get("properties", {}).items():
        prop = _resolve(prop, root)
        if key not in instance and "default" in prop:
            instance[key] = copy.deepcopy(prop["default"])
        if isinstance(instance.get(key), dict) and "properties" in prop:
            _fill(instance[key], prop, root)


def with_defaults(config: dict) -> dict:
    """A copy of ``config`` with every unset optional key set to its schema ``default`` (the one place defaults
    live). Mappings keyed by the user (``distill.methods``, ``finetune.overrides``) get none: a method's unset
    keys mean "take distill.<key>", an override's "keep the finetune value"."""
    config = copy.deepcopy(config)
    root = schema()
    _fill(config, root, root)
    return config


def _check_cross_references(config: dict, source: str) -> None:
    from optima.tasks import task_names

    known = task_names()
    named = [("tasks", t) for t in config["tasks"]]
    named += [("finetune.overrides", t) for t in config["finetune"]["overrides"]]
    for where, task in named:
        if task not in known:
            raise ConfigError(f"{source}: {where}: unknown task {task!r} (known: {', '.join(known)})")
    distill = config["distill"]
    methods = distill["methods"]
    for name in methods:
        check_method_name(name, f"{source}: distill.methods")
    for name in distill["run"]:
        if name not in methods:
            raise ConfigError(
                f"{source}: distill.run: method {name!r} is not defined in distill.methods "
                f"(defined: {', '.join(methods)})"
            )
    for name, method in methods.items():
        if method["policy"] == "fixed":
            arm = method.get("options", {}).get("arm")
            if arm not in MODULES:
                raise ConfigError(
                    f"{source}: distill.methods.{name}.options.arm: must be one of {', '.join(MODULES)}, got {arm!r}"
                )
        if method["policy"] != "none":  # build the policy once so a bad option fails at load time
            from optima.bandits.registry import build_method_policy

            try:
                build_method_policy(method_spec(config, name), MODULES, seed=0)
            except ConfigError as exc:
                raise ConfigError(f"{source}: {exc}") from None
    _check_probe_size(config, source)
    _check_training_lengths(config, source)


def check_method_name(name, where: str = "distill.methods") -> None:
    """A method name is a path component, a table row and a dotted config key: ConfigError unless it matches
    METHOD_NAME (so that ``../../x`` cannot write outside a results folder) and is not a teacher's name."""
    if not isinstance(name, str) or not METHOD_NAME.fullmatch(name):
        raise ConfigError(f"{where}: method name {name!r} may hold only letters, digits, _ and - and must start with a "
                          "letter or digit (it becomes a directory name and a dotted config key)")
    if name in RESERVED_METHODS:
        raise ConfigError(f"{where}: method name {name!r} is reserved (run_info.json uses "
                          f"{', '.join(RESERVED_METHODS)} for the teachers)")


def method_round_problem(config: dict, name: str) -> str | None:
    """Why method ``name`` would train nothing like its policy under ``distill.steps`` (no bandit round
    completes: the first module picked trains the whole run, and no reward is ever recorded); None when fine."""
    from optima.bandits.registry import POLICIES

    method = method_spec(config, name)
    policy = method["policy"]
    if policy in ("none", "fixed") or POLICIES[policy].plays_all:
        return None  # every step trains what the method says, whatever the rounds
    steps, round_steps = config["distill"]["steps"], method["round_steps"]
    if round_steps <= steps:
        return None
    key = (f"distill.methods.{name}.round_steps" if "round_steps" in config["distill"]["methods"][name]
           else "distill.round_steps")
    return (f"distill.methods.{name}: {key} ({round_steps}) is more than distill.steps ({steps}): no bandit round "
            f"completes, so one module would train the whole run; lower {key} or raise distill.steps")


def _check_training_lengths(config: dict, source: str) -> None:
    """A fine-tuning or distillation run of 0 steps trains nothing; a method run by the pipeline must complete a
    bandit round (docs/silent.md: both fail rather than give a result that looks like a trained one)."""
    finetune = config["finetune"]
    lengths = [("distill.steps", config["distill"]["steps"]), ("finetune.steps", finetune["steps"])]
    lengths += [(f"finetune.overrides.{task}.steps", values["steps"])
                for task, values in finetune["overrides"].items() if values and "steps" in values]
    for key, steps in lengths:
        if steps == 0:
            raise ConfigError(f"{source}: {key}: 0 steps train nothing (the run would save its starting point as if "
                              "trained); at least 1")
    for name in config["distill"]["run"]:
        problem = method_round_problem(config, name)
        if problem:
            raise ConfigError(f"{source}: {problem}")


def schedule_warnings(config: dict) -> list[str]:
    """One message per training section whose learning-rate warm-up is longer than its run (the learning rate
    never reaches its configured value; the run still trains)."""
    sections = [("pretrain", config["pretrain"])] if config["pretrain"]["mode"] == "train" else []
    sections += [("finetune", finetune_section(config, task)) for task in config["tasks"]]
    sections += [("distill", config["distill"])]
    messages = []
    for name, section in sections:
        if section["warmup_steps"] > section["steps"] > 0:
            message = (f"{name}.warmup_steps ({section['warmup_steps']}) is more than {name}.steps ({section['steps']})"
                       f": the learning rate never reaches {name}.lr")
            if message not in messages:
                messages.append(message)
    return messages


def _check_probe_size(config: dict, source: str) -> None:
    """The probe's images are held out of every method's training set: at most MAX_PROBE_FRACTION of them
    (checked here for synthetic data, whose size the config states; at run time for the official files)."""
    data, distill = config["data"], config["distill"]
    if data["source"] != "synthetic" or "probe_size" not in distill:
        return
    images = data["synthetic"]["images"]["train"]
    if not isinstance(images, int):
        return
    from optima.tasks import get_task

    # an example may show several images (NLVR2: two)
    per_item = max(get_task(task).images_per_example for task in config["tasks"])
    allowed = int(images * MAX_PROBE_FRACTION) // per_item
    if distill["probe_size"] > allowed:
        raise ConfigError(
            f"{source}: distill.probe_size: {distill['probe_size']} probe examples need "
            f"{distill['probe_size'] * per_item} held-out training images, more than "
            f"{MAX_PROBE_FRACTION:.0%} of data.synthetic.images.train ({images}); at most {allowed}")


def memory_warnings(config: dict) -> list[str]:
    """One message per run method whose reward-driven policy remembers at least as many rounds as its run
    has (it then never forgets: OPTIMA's 'recent history' would not act)."""
    from optima.bandits.registry import build_method_policy

    messages = []
    distill = config["distill"]
    for name in distill["run"]:
        method = method_spec(config, name)
        if method["policy"] == "none":
            continue
        policy, _ = build_method_policy(method, MODULES, seed=0)
        if not policy.uses_rewards or not {"window", "gamma"} & set(vars(policy.options)):
            continue  # stationary by definition (ts, ucb, exp3) or ignores rewards
        rounds = distill["steps"] // method["round_steps"]
        if rounds == 0:
            continue  # no round at all: an error (method_round_problem), not a memory question
        memory = policy.options.memory_rounds()
        if memory >= rounds:
            keys = {k: method["options"].get(k) for k in ("window", "window_unit", "gamma") if k in method["options"]}
            where = "distill.optima" if method["policy"] == "optima" else f"distill.methods.{name}.options"
            shown = ", ".join(f"{where}.{k}={v}" for k, v in keys.items()) or "the whole history"
            messages.append(
                f"distill.methods.{name}: the policy remembers {'all' if math.isinf(memory) else f'{memory:g}'} "
                f"rounds ({shown}) but the run has only {rounds} (distill.steps={distill['steps']} / "
                f"round_steps={method['round_steps']}): it never forgets")
    return messages


def apply_overrides(config: dict, overrides: Iterable[str], source: str = "--set") -> dict:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a deep copy of ``config``."""
    config = copy.deepcopy(config)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{source}: {item!r}: expected KEY.PATH=VALUE")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"{source}: {key}: not a dotted key path (an empty name between dots); a method name "
                              "may hold only letters, digits, _ and -")
        node = config
        for part in parts[:-1]:
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"{source}: {key}: unknown key {part!r}")
            node = node[part]
        if not isinstance(node, dict):
            raise ConfigError(f"{source}: {key}: {'.'.join(parts[:-1])} is not a mapping")
        node[parts[-1]] = _parse_value(raw)
    return config


def _parse_value(raw: str):
    value = yaml.safe_load(raw)
    if isinstance(value, str):
        try:  # YAML 1.1 reads "3e-3" as a string; on the command line it means a number
            return float(value) if value.strip().lower() not in ("nan", "inf", "-inf", "infinity") else value
        except ValueError:
            pass
    return value


def merge_overlay(config: dict, overlay: dict) -> dict:
    """``config`` with ``overlay`` deep-merged onto it (a copy): mappings merge key by key, any other value
    replaces. The semantics of Snakemake's extra ``--configfile`` files (workflow/rules/common.smk turns them
    into the verbs' --set overrides)."""
    merged = copy.deepcopy(config)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_overlay(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def read_overlay(path: str | Path) -> dict:
    """A config overlay file: a YAML mapping of the keys it changes. Raises ConfigError naming the file."""
    path = Path(path)
    try:
        overlay = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config overlay not found") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read config overlay: {exc}") from None
    if not isinstance(overlay, dict):
        raise ConfigError(f"{path}: a config overlay must be a mapping at the top level")
    return overlay


def load_config(path: str | Path, overrides: Iterable[str] = (), defaults: bool = True) -> dict:
    """Read, override and validate a config file, its unset optional keys filled from the schema (``defaults``;
    False: the keys as written). Raises ConfigError naming file and key."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: a config file must be a mapping at the top level")
    overrides = list(overrides)
    if overrides:
        config = apply_overrides(config, overrides)
    source = str(path) + (" (with --set overrides)" if overrides else "")
    validate(config, source)
    if defaults:
        config = with_defaults(config)
    resolved = config if defaults else with_defaults(config)
    for message in memory_warnings(resolved) + schedule_warnings(resolved):
        warnings.warn(f"{source}: {message}", ConfigWarning, stacklevel=2)
    return config


def config_hash(section: Any) -> str:
    """Stable short hash of a config section (used to refuse resuming a run from another config)."""
    blob = json.dumps(section, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def finetune_section(config: dict, task: str) -> dict:
    """The fine-tuning settings of ``task``: ``finetune`` with ``finetune.overrides.<task>`` applied."""
    section = {k: v for k, v in config["finetune"].items() if k != "overrides"}
    section.update(config["finetune"]["overrides"].get(task) or {})
    return section


def method_spec(config: dict, name: str) -> dict:
    """Resolve a distillation method: its policy, policy options and loss weights."""
    distill = config["distill"]
    if name not in distill["methods"]:
        raise ConfigError(f"distill.methods: unknown method {name!r} (defined: {', '.join(distill['methods'])})")
    method = distill["methods"][name]
    options = {}
    if method["policy"] == "optima":
        options.update(distill["optima"] or {})
    options.update(method.get("options") or {})
    # a method's own value wins; an unset one is distill.<key> (whose default the schema holds)
    inherited = {key: method.get(key, distill[key])
                 for key in ("kd_weight", "layer_weight", "temperature", "round_steps", "reward", "arms")}
    return {"name": name, "policy": method["policy"], "options": options, **inherited}

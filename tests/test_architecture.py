"""What may import what inside optima/ (docs/architecture.md): every import, at the top of a module or inside a
function, goes to a module of the same layer or a lower one; no import circle; no library module imports a verb
module (the modules `optima <verb>` runs)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "optima"

# The layers, lowest first; a module belongs to the longest prefix listed (docs/architecture.md has the picture).
LAYERS = {
    # leaves: no optima import beyond their own layer
    "optima": 0, "optima.errors": 0, "optima.io": 0, "optima.machine": 0, "optima.coca_modules": 0,
    # numerics and runtime; the module-selection policies
    "optima.runtime": 1, "optima.bandits": 1,
    # building blocks: data formats and loaders, CoCa models and heads, official metrics
    "optima.data": 2, "optima.models": 2, "optima.eval": 2,
    # what a task is (asks the building blocks), and the config (checks task names against the registry)
    "optima.tasks": 3, "optima.config": 3,
    # pipeline steps that ask the registry: preparing data, training, evaluating; run directories and options
    "optima.data.prepare": 4, "optima.data.fetch": 4, "optima.eval.evaluate": 4, "optima.distill": 4,
    "optima.runs": 4, "optima.args": 4,
    # verbs and reports: the CLI's modules, benchmarks, tables and figures
    "optima.commands": 5, "optima.paper": 5, "optima.cli": 5, "optima.__main__": 5, "optima.config_cli": 5,
    "optima.bench": 5, "optima.gpus": 5, "optima.distill.bench_step": 5, "optima.models.bench": 5,
    "optima.bandits.bench": 5,
}


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    return modules


MODULES = _modules()


def _target(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "optima":
            for alias in node.names:  # `from optima.eval import captions` imports the module optima.eval.captions
                found.add(_target(f"{node.module}.{alias.name}") if f"{node.module}.{alias.name}" in MODULES
                          else _target(node.module))
        elif isinstance(node, ast.Import):
            found |= {_target(a.name) for a in node.names if a.name.split(".")[0] == "optima"}
    return found - {None}


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def layer(module: str) -> int:
    parts = module.split(".")
    for k in range(len(parts), 0, -1):
        prefix = ".".join(parts[:k])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise AssertionError(f"{module}: no layer in tests/test_architecture.py LAYERS")


def test_every_import_goes_to_the_same_layer_or_below():
    upward = [f"{m} (layer {layer(m)}) imports {t} (layer {layer(t)})"
              for m, targets in GRAPH.items() for t in sorted(targets) if layer(t) > layer(m)]
    assert not upward, "\n".join(upward)


def test_no_import_circle():
    state, stack, circles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == "open":
                circles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(GRAPH):
        if node not in state:
            visit(node)
    assert not circles, "\n".join(circles)


def test_no_library_module_imports_a_verb_module():
    """A verb module may reuse another report verb's writer (``optima publish`` writes the tables and figures
    with their verbs' functions); a library module never imports a verb."""
    from optima.cli import VERBS

    verbs = {module for module, _ in VERBS.values()}
    offenders = [f"{m} imports the verb module {t}" for m, targets in GRAPH.items() for t in targets
                 if t in verbs and m not in verbs]
    assert not offenders, "\n".join(offenders)


def test_no_task_branches_outside_the_task_modules():
    """What differs per task lives in optima/tasks/: code asks the task, it does not compare its name."""
    offenders = [f"{path.relative_to(ROOT)}:{k}: {line.strip()}" for name, path in MODULES.items()
                 if not name.startswith("optima.tasks")
                 for k, line in enumerate(path.read_text().splitlines(), 1) if "task == " in line or "task != " in line]
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("module", ["optima.errors", "optima.data.formats"])
def test_the_checks_see_imports_inside_functions(module):
    """The graph includes imports inside functions (most of optima's heavy imports are there)."""
    lazy = {"optima.errors": set(), "optima.data.formats": {"optima.data.answers"}}[module]
    assert lazy <= GRAPH[module]


def test_the_reward_names_are_defined_once():
    """distill.reward's values in the schema are the rewards optima.distill.rounds computes."""
    from optima.config import schema
    from optima.distill.rounds import REWARD_COLUMNS, REWARDS

    assert schema()["$defs"]["reward"]["enum"] == list(REWARDS) == list(REWARD_COLUMNS)

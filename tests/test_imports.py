"""The import graph of src/cdface: no import circle, and no import that runs back up the pipeline.

The graph is built statically (``ast``) from every ``import``/``from ... import`` in src/cdface, including
the ones inside functions (a lazy import is still a dependency). ``from cdface.x import y`` is an edge to
the module ``cdface.x.y`` when that is a module, else to ``cdface.x``. Importing a submodule also runs its
package's ``__init__``; that implicit edge is left out, since every package's ``__init__`` imports its own
submodules. Names that ``cdface/__init__.py`` and ``eval/__init__.py`` resolve through ``importlib`` on first
attribute access (a facade over their package) are not edges either; nor is ``cdface.cli`` loading each
area's ``cli.py`` by name.

Layers, lowest first (docs/architecture.md, "Layers"): a module may import its own layer and the layers
below it. The order is the one the code follows: detection packs RecordIO (data), the miner serves the
heads (a head's ``hard_negatives`` calls it), the sharded head builds on heads and miners, inference
builds on models and detection, evaluation embeds through inference's ``FaceEmbedder``, and training runs
periodic verification with eval's scoring. eval/ holds two layers: scoring saved features (no model; used by
train/ and inference/) below inference/, and evaluating a model (targets/, evaluate.py) above it.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

LAYERS: list[tuple[str, set[str]]] = [
    # top-level helpers: no cdface import above themselves
    ("foundation", {"cdface", "cdface.errors", "cdface.files", "cdface.threads", "cdface.precision",
                    "cdface.embedding", "cdface.cli_args", "cdface.process_group", "cdface.collectives",
                    "cdface.run_files"}),
    ("data", {"cdface.data"}),
    ("detect", {"cdface.detect"}),
    ("models", {"cdface.models"}),
    ("miners", {"cdface.miners"}),
    ("heads", {"cdface.heads"}),
    ("losses", {"cdface.losses"}),
    ("parallel", {"cdface.parallel"}),
    # eval/'s first half scores saved features (no model): verification, roc, ijb, megaface, thresholds,
    # feature files, `cdface score`'s protocols; train/ and inference/ score with it
    ("eval: scoring", {"cdface.eval"}),
    ("inference", {"cdface.inference"}),
    # eval/'s second half embeds each benchmark through inference's FaceEmbedder; eval/cli.py registers
    # `cdface eval` (cli_eval.py) beside `cdface score`
    ("eval: from a model", {"cdface.eval.targets", "cdface.eval.evaluate", "cdface.eval.cli_eval",
                            "cdface.eval.cli"}),
    # config is the training run's schema: read by train/ only, it checks margin names against heads/
    ("train", {"cdface.train", "cdface.config"}),
    # the `cdface` command: imports each area's cli.py (by name, through importlib)
    ("command", {"cdface.cli", "cdface.__main__"}),
]

# Imports that run back up today, each with where it belongs (none now: a command that needs a higher area is
# extended by that area, e.g. detect/data_cli.py adds `--detect` to `data pack`). Each must still exist (a fixed
# one is removed from this list); nothing may be added without the same.
KNOWN_UPWARD: set[tuple[str, str]] = set()


def _modules(src: Path) -> dict[str, Path]:
    mods = {}
    for path in sorted((src / "cdface").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


@functools.cache  # parsed once per session (~1.5 s on the 2-core box); callers only read it
def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """``{module: modules of cdface it imports}`` over every module under ``src/cdface``."""
    mods = _modules(src)
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                for alias in node.names:
                    sub = f"{module}.{alias.name}"
                    targets.add(sub if sub in mods else module)
        graph[name] = {t for t in targets if t in mods and t != name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def layer_of(module: str) -> int:
    """Position of ``module``'s layer in ``LAYERS``: the longest name in a layer that is ``module`` or a package
    holding it (``cdface.eval.targets.ijb`` -> ``cdface.eval.targets``; ``cdface.eval.roc`` -> ``cdface.eval``)."""
    parts = module.split(".")
    for end in range(len(parts), min(len(parts), 2) - 1, -1):  # never up to "cdface" itself
        prefix = ".".join(parts[:end])
        for position, (_, members) in enumerate(LAYERS):
            if prefix in members:
                return position
    raise AssertionError(f"{module}: in no layer of tests/test_imports.py LAYERS (and docs/architecture.md)")


def upward_imports(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """Every edge from a module to one of a later layer."""
    return {(a, b) for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a)}


def test_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 100 and "cdface.eval.cli" in graph  # the whole package was read
    assert import_cycles(graph) == []


def test_cycle_finder_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert import_cycles(graph) == [["a", "b", "c"]]


def test_every_module_has_a_layer():
    for module in import_graph():
        layer_of(module)  # raises for a new folder or top-level module not placed in LAYERS
    for stray in ("cdface.newarea.x", "cdface.newtool"):
        with pytest.raises(AssertionError, match="in no layer"):
            layer_of(stray)
    assert layer_of("cdface.eval.targets.ijb") > layer_of("cdface.inference.embedder") > layer_of("cdface.eval.roc")


def test_no_import_runs_back_up_the_pipeline():
    upward = upward_imports(import_graph())
    new = sorted(upward - KNOWN_UPWARD)
    assert not new, "imports into a later layer of the pipeline:\n" + "\n".join(
        f"  {a} ({LAYERS[layer_of(a)][0]}) -> {b} ({LAYERS[layer_of(b)][0]})" for a, b in new
    )
    fixed = sorted(KNOWN_UPWARD - upward)
    assert not fixed, f"no longer imported, remove from KNOWN_UPWARD: {fixed}"

"""Nothing in src/cdface can run code from a file: an AST scan of the whole package.

Forbidden: eval/exec/compile of strings, pickle/marshal/dill/joblib/shelve loading (except the restricted
unpickler in data/safe_unpickle.py, which must override find_class), torch.load without a literal
weights_only=True, torch.jit.load, yaml.load/unsafe_load/full_load or unsafe loaders, np.load with
allow_pickle=True, and references to these functions that are not calls (aliases would dodge the scan).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "cdface"
FILES = sorted(SRC.rglob("*.py"))

FORBIDDEN_ATTRS = {
    ("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("_pickle", "load"), ("_pickle", "loads"),
    ("cPickle", "load"), ("marshal", "load"), ("marshal", "loads"), ("dill", "load"), ("dill", "loads"),
    ("joblib", "load"), ("shelve", "open"), ("yaml", "load"), ("yaml", "unsafe_load"), ("yaml", "full_load"),
    ("yaml", "load_all"), ("yaml", "unsafe_load_all"), ("yaml", "full_load_all"), ("yaml", "Loader"),
    ("yaml", "UnsafeLoader"), ("yaml", "FullLoader"), ("jit", "load"), ("pd", "read_pickle"),
    ("pandas", "read_pickle"), ("builtins", "eval"), ("builtins", "exec"),
}
FORBIDDEN_NAMES = {"eval", "exec", "__import__"}
# pickle.Unpickler may only be subclassed here, and the subclass must override find_class
RESTRICTED_UNPICKLER = SRC / "data" / "safe_unpickle.py"


def _dotted(node: ast.AST) -> tuple[str, str] | None:
    if isinstance(node, ast.Attribute):
        base = node.value
        name = base.id if isinstance(base, ast.Name) else base.attr if isinstance(base, ast.Attribute) else None
        return (name, node.attr) if name else None
    return None


def _kw(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def scan(path: Path, root: Path = SRC) -> list[str]:
    """Every forbidden construct in one file, as 'file:line: what'."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    rel = path.relative_to(root.parent)
    problems: list[str] = []
    call_funcs = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.ImportFrom) and node.module in ("pickle", "marshal", "dill", "yaml", "builtins"):
            for alias in node.names:
                if (node.module, alias.name) in FORBIDDEN_ATTRS or alias.name in FORBIDDEN_NAMES:
                    problems.append(f"{rel}:{line}: from {node.module} import {alias.name}")
        if isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES:
            problems.append(f"{rel}:{line}: {node.id}")
        if isinstance(node, ast.Name) and node.id == "compile" and id(node) in call_funcs:
            problems.append(f"{rel}:{line}: compile()")
        dotted = _dotted(node)
        if dotted in FORBIDDEN_ATTRS:
            allowed = dotted == ("pickle", "Unpickler") and path == RESTRICTED_UNPICKLER
            if not allowed:
                problems.append(f"{rel}:{line}: {dotted[0]}.{dotted[1]}")
        if dotted == ("torch", "load") and id(node) not in call_funcs:
            problems.append(f"{rel}:{line}: torch.load referenced without calling it (alias?)")
        if isinstance(node, ast.Call):
            func = _dotted(node.func)
            if func == ("torch", "load"):
                flag = _kw(node, "weights_only")
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    problems.append(f"{rel}:{line}: torch.load without weights_only=True")
            if func in (("np", "load"), ("numpy", "load")):
                flag = _kw(node, "allow_pickle")
                if flag is not None and not (isinstance(flag, ast.Constant) and flag.value is False):
                    problems.append(f"{rel}:{line}: np.load with allow_pickle not False")
        if isinstance(node, ast.ClassDef) and path == RESTRICTED_UNPICKLER:
            if any(_dotted(b) == ("pickle", "Unpickler") for b in node.bases):
                methods = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
                if "find_class" not in methods:
                    problems.append(f"{rel}:{line}: Unpickler subclass without find_class")
    return problems


def test_package_is_found():
    assert len(FILES) > 30 and RESTRICTED_UNPICKLER in FILES


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_code_running_loaders(path):
    assert scan(path) == []


def test_every_torch_load_in_the_package_is_weights_only():
    """The scan sees the real call site (so an empty result above means something), and there is one:
    `cdface.files.load_weights`, which checkpoints, model files and sharded-head states all go through."""
    calls = [(p, n) for p in FILES for n in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
             if isinstance(n, ast.Call) and _dotted(n.func) == ("torch", "load")]
    assert [str(p.relative_to(SRC)) for p, _ in calls] == ["files.py"]
    for _, call in calls:
        assert isinstance(_kw(call, "weights_only"), ast.Constant) and _kw(call, "weights_only").value is True


@pytest.mark.parametrize(
    "source, found",
    [
        ("import torch\ntorch.load(p)\n", "torch.load without weights_only=True"),
        ("import torch\ntorch.load(p, weights_only=False)\n", "torch.load without weights_only=True"),
        ("import torch\nload = torch.load\n", "alias"),
        ("import pickle\npickle.loads(b)\n", "pickle.loads"),
        ("from pickle import load\n", "from pickle import load"),
        ("import yaml\nyaml.load(t, Loader=yaml.Loader)\n", "yaml.load"),
        ("import numpy as np\nnp.load(p, allow_pickle=True)\n", "allow_pickle"),
        ("eval('1')\n", "eval"),
        ("import torch\ntorch.jit.load(p)\n", "jit.load"),
    ],
)
def test_scan_catches_each_forbidden_form(tmp_path, source, found):
    bad = tmp_path / "bad.py"
    bad.write_text(source)
    problems = scan(bad, root=tmp_path)
    assert problems and found in problems[0]

"""The Makefile's install (what `make quickstart` and `make test` run first): PyTorch's CPU build from its own
index where there is no GPU, a quick fall-back to the default index, and the MTCNN weights' wheel without its
dependencies. Read from `make -n` (nothing is installed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    venv = tmp_path_factory.mktemp("venv") / ".venv"
    done = subprocess.run(["make", "-n", "-B", "install", f"VENV={venv}"], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    return done.stdout.replace("\\\n", " ")  # one line per shell command


def test_cpu_index_first_with_a_short_timeout_and_no_retries(recipe):
    cpu = next(line for line in recipe.splitlines() if "--index-url https://download.pytorch.org/whl/cpu" in line)
    assert "--timeout 5" in cpu and "--retries 0" in cpu and "requirements-cpu.txt" in cpu
    # the GPU branch comes first, the default index is the fall-back after it fails
    assert recipe.index("nvidia-smi") < recipe.index("download.pytorch.org") < recipe.index("cannot be reached")


def test_detector_weights_wheel_without_dependencies(recipe):
    line = next(line for line in recipe.splitlines() if "facenet-pytorch" in line)
    assert "--no-deps" in line and "facenet-pytorch==2.6.0" in line
    assert recipe.index('-e ".[test,onnx]"') < recipe.index("facenet-pytorch")


def test_readme_install_says_the_same():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    install = readme[readme.index("## Install"):readme.index("## Quickstart")]
    assert "--index-url https://download.pytorch.org/whl/cpu" in install
    assert "pip install --no-deps facenet-pytorch==2.6.0" in install
    assert readme.startswith("# cdface\n\n```bash\nmake quickstart")

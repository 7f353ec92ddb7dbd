"""The shipped configs (the repository's ``configs/``; ``cdface/configs/`` in a wheel), found by name."""

from __future__ import annotations

from pathlib import Path


def shipped_config_dir(package: Path | None = None) -> Path | None:
    """The folder of the shipped configs: ``cdface/configs/`` in an installed wheel (package data, mapped from the
    repository's ``configs/`` by setup.py), else the repository's ``configs/`` beside ``src/`` (a source checkout
    or an editable install); None when neither exists. ``package``: the cdface package folder (tests)."""
    package = package or Path(__file__).resolve().parents[1]  # cdface/, above this config/
    for candidate in (package / "configs", package.parents[1] / "configs"):
        if candidate.is_dir():
            return candidate
    return None


def shipped_configs() -> dict[str, Path]:
    """{name: path} of the shipped configs (``synthetic_arcface`` -> ``.../configs/synthetic_arcface.yaml``)."""
    folder = shipped_config_dir()
    return {} if folder is None else {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def shipped_config(name: str) -> Path | None:
    """The shipped config a bare name (``synthetic_arcface`` or ``synthetic_arcface.yaml``, no folder) names."""
    path = Path(name)
    if path.parent != Path("."):
        return None
    return shipped_configs().get(path.stem if path.suffix == ".yaml" else path.name)


def resolve_config_path(path: str | Path) -> Path:
    """``path`` itself when it exists, else the shipped config it names, else ``path`` (reading it then fails)."""
    path = Path(path)
    return path if path.exists() else shipped_config(str(path)) or path

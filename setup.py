"""The packages, for setuptools (the rest of the metadata is in pyproject.toml): every package under src/, and
the repository's configs/ as the package `cdface.configs`, so that a wheel ships the configs that `cdface train
NAME` finds by name (`cdface.config.shipped_config_dir`) while the checkout keeps them at configs/."""

from setuptools import find_namespace_packages, setup

setup(
    packages=[*find_namespace_packages("src", include=["cdface", "cdface.*"], exclude=["*.__pycache__"]),
              "cdface.configs"],
    package_dir={"": "src", "cdface.configs": "configs"},
)

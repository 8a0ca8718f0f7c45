"""Installs `xprompt_jax`, the top-level `tasks/` folder as `xprompt_jax.tasks` and the
top-level `gin/` folder (every config) as `xprompt_jax/gin/` (what `gin_utils` searches)."""

from setuptools import find_namespace_packages, find_packages, setup


def _data_packages(package: str, folder: str) -> list:
    """`folder` (files, no `__init__.py`) and its sub-folders as the namespace packages
    `package`, `package.sub`, ...: setuptools then ships their files as package data
    (declared, so no 'is not a package' warning)."""
    return [package] + [f"{package}.{sub}" for sub in
                        find_namespace_packages(where=folder, exclude=["*__pycache__*"])]


PACKAGES = (find_packages(include=["xprompt_jax", "xprompt_jax.*"]) + ["xprompt_jax.tasks"]
            + _data_packages("xprompt_jax.gin", "gin")
            + _data_packages("xprompt_jax.data", "xprompt_jax/data"))

# Ranges: the lower bounds are the versions installed and tested together; upper bounds
# stop at the next minor/major release that has not been tested.
INSTALL_REQUIRES = [
    # jax 0.10 is what Python 3.11 gets here; t5x (cc342d41) needs jax 0.12 (Python 3.12): both tested.
    "jax>=0.10.2,<0.13",
    "jaxlib>=0.10.2,<0.13",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "tensorstore>=0.1.86,<0.2",
    "gin-config>=0.5.0,<0.6",
    "seqio>=0.0.20,<0.1",
    "tensorflow>=2.21,<2.22",
    "tensorflow-text>=2.21,<2.22",
    "tensorflow-datasets>=4.9.10,<5",
    "sentencepiece>=0.2.1,<0.3",
    "numpy>=2.0,<3",
    "msgpack>=1.0,<2",
    "absl-py>=2.1,<3",
    "tqdm>=4.66,<5",
    "tensorboardX>=2.6,<3",
    "matplotlib>=3.8,<4",
    "scikit-learn>=1.5,<2",
    "scipy>=1.13,<2",
]

EXTRAS_REQUIRE = {
    "test": ["pytest>=8,<10", "pytest-xdist>=3.5,<4", "hypothesis>=6.100,<7"],
    # torch==2.13.0 is the CPU build available on the project's machines.
    "hf": ["torch==2.13.0", "transformers>=5.23,<6", "peft>=0.21,<0.22", "safetensors>=0.8,<0.9"],
    # The documentation site (mkdocs.yml; `mkdocs build --strict` in .ci/run).
    "docs": ["mkdocs>=1.6.1,<1.7", "mkdocs-material>=9.8.2,<9.9", "mkdocstrings>=1.0.8,<1.1",
             "mkdocstrings-python>=2.0.11,<2.1", "pymdown-extensions>=13.1.2,<13.2"],
}

setup(
    name="xprompt_jax",
    version="0.1.0",
    description="Soft-prompt tuning, XPrompt and EPT for frozen T5 models in JAX/Flax",
    python_requires=">=3.10",
    packages=PACKAGES,
    package_dir={"xprompt_jax.tasks": "tasks", "xprompt_jax.gin": "gin"},
    include_package_data=False,  # exactly package_data below (no stray files from the tree)
    package_data={"xprompt_jax.gin": ["**/*.gin"], "xprompt_jax.data": ["**/*"],
                  "xprompt_jax.tasks": ["*.md"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={
        "console_scripts": [
            "xprompt-train=xprompt_jax.train:console_entry",
            "xprompt-evaluate=xprompt_jax.evaluate:console_entry",
            "xprompt-ensemble=xprompt_jax.ensemble:console_entry",
            "xprompt-pipeline=xprompt_jax.xprompt.__main__:console_entry",
            "xprompt-prune=xprompt_jax.prune:console_entry",
            "xprompt-export=xprompt_jax.export:console_entry",
            "xprompt-quickstart=xprompt_jax.quickstart:console_entry",
            "xprompt-infer=xprompt_jax.infer:console_entry",
        ],
    },
)

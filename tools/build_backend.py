"""cnnext's build backend: setuptools' own, behind one check that torch is importable.

cnnext is compiled against the torch it will be loaded into. With build isolation
(a plain ``pip install .``) pip builds in a throw-away environment holding only the
build requirements, so it would download the newest torch (a multi-GB CUDA build)
to compile against, and the result would not load into the torch the user has.
pyproject.toml therefore requires nothing for the build, and every hook here stops
at once, before anything is downloaded, when torch cannot be imported, saying
what to run instead. With ``--no-build-isolation`` the hooks run in the user's own
environment, find its torch and setuptools, and are setuptools' hooks unchanged.
"""
from __future__ import annotations

import sys
from types import ModuleType

MESSAGE = """
cnnext must be compiled against the torch it will run with, and pip's isolated build
environment has no torch (pip would have to download the newest one, a multi-GB
CUDA build, only to compile against it). Install torch first, then build cnnext
against it without build isolation:

    pip install torch ninja setuptools wheel
    pip install --no-build-isolation .

(add -e for an editable install; torch==2.13.0 is the version the README's
commands were checked with).
"""


def _setuptools_backend() -> ModuleType:
    try:
        import torch  # noqa: F401  (only its presence is checked here; setup.py builds against it)
        from setuptools import build_meta
    except ImportError as exc:
        sys.stderr.write(f"\ncnnext: cannot build here: {exc}.\n{MESSAGE}\n")
        raise SystemExit(1) from None
    return build_meta


def __getattr__(name: str):
    """Every PEP 517/660 hook is setuptools' own, once torch is known to be importable."""
    if name.startswith("__"):
        raise AttributeError(name)
    return getattr(_setuptools_backend(), name)

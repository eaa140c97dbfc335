"""Imports of pyworld and resemblyzer that survive setuptools >= 81.

pyworld 0.3.5 and webrtcvad 2.0.10 (which resemblyzer imports) read their own version with
``pkg_resources.get_distribution(name).version`` at import time, and setuptools 81 removed
``pkg_resources``. Where it is missing, a one-function stand-in backed by :mod:`importlib.metadata` is
registered before the import; where the real one exists, nothing changes.
"""

from __future__ import annotations

import importlib.metadata
import sys
import types
from typing import Any


def _ensure_pkg_resources() -> None:
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        stub = types.ModuleType("pkg_resources")
        stub.get_distribution = lambda name: types.SimpleNamespace(  # type: ignore[attr-defined]
            version=importlib.metadata.version(name)
        )
        sys.modules["pkg_resources"] = stub


def import_pyworld() -> Any:
    """Returns the ``pyworld`` module (the WORLD vocoder)."""
    _ensure_pkg_resources()
    try:
        import pyworld
    except ImportError as err:
        raise ImportError("WORLD warps need pyworld: pip install -e '.[corpus]'") from err
    return pyworld


def import_resemblyzer() -> Any:
    """Returns the ``resemblyzer`` module (speaker embeddings; its weights ship in the wheel)."""
    _ensure_pkg_resources()
    try:
        import resemblyzer
    except ImportError as err:
        raise ImportError("the separability check needs resemblyzer: pip install -e '.[corpus]'") from err
    return resemblyzer

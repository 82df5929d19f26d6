"""botocore, loaded for a boot: its documentation generator only when something reads it.

``botocore.client`` and ``botocore.waiter`` import ``botocore.docs.docstring`` for the lazy
docstrings they give each client method, and with it the whole documentation generator
(about twenty modules, html among them: a tenth of botocore's import). A boot reads no
docstring. :func:`load` first registers a stand-in for that package whose three docstring
classes give empty docstrings; anything else asked of it (boto3 asks for
``LazyLoadedDocstring``, ``help()`` for the real text) loads botocore's own modules at that
moment and answers from them. The stand-in is only ever put in place before botocore's
client is loaded, never replacing modules already there.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from typing import Any

DOCS, DOCSTRING = "botocore.docs", "botocore.docs.docstring"
STANDING_IN = ("ClientMethodDocstring", "PaginatorDocstring", "WaiterDocstring")


class _Undocumented(str):
    """A client method's (paginator's, waiter's) docstring, left empty."""

    __slots__ = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> _Undocumented:
        return super().__new__(cls, "")


def load() -> types.ModuleType:
    """``agent.aws`` (and so botocore), with the docs on demand."""
    docs_on_demand()
    return importlib.import_module("agent.aws")


def docs_on_demand() -> bool:
    """Register the stand-in (True), unless botocore's client or docs are loaded already."""
    if DOCS in sys.modules or "botocore.client" in sys.modules:
        return False
    spec = importlib.util.find_spec("botocore")
    if spec is None or not spec.submodule_search_locations:
        return False
    package = types.ModuleType(DOCS, "botocore's documentation generator, loaded on demand")
    package.__path__ = [os.path.join(next(iter(spec.submodule_search_locations)), "docs")]
    stand_in = types.ModuleType(DOCSTRING)
    for name in STANDING_IN:
        setattr(stand_in, name, type(name, (_Undocumented,), {"__slots__": ()}))
    stand_in.__getattr__ = _real  # type: ignore[method-assign]  # PEP 562: anything else
    package.__getattr__ = _real  # type: ignore[method-assign]
    sys.modules[DOCS], sys.modules[DOCSTRING] = package, stand_in
    return True


def _real(name: str) -> Any:
    """What the stand-in does not have, from botocore's own modules (loaded now, once)."""
    if name.startswith("__"):
        raise AttributeError(name)
    for module in (DOCSTRING, DOCS):
        if getattr(sys.modules.get(module), "__getattr__", None) is _real:
            del sys.modules[module]
    real = importlib.import_module(DOCSTRING)
    try:
        return getattr(real, name)
    except AttributeError:
        return getattr(sys.modules[DOCS], name)

"""botocore, loaded for a boot: what it imports but a boot never uses, only when used.

- ``botocore.client`` and ``botocore.waiter`` import ``botocore.docs.docstring`` for the lazy
  docstrings they give each client method, and with it the whole documentation generator
  (about twenty modules, html among them: a tenth of botocore's import). A boot reads no
  docstring. A stand-in for that package has the three docstring classes give empty
  docstrings; anything else asked of it (boto3 asks for ``LazyLoadedDocstring``, ``help()``
  for the real text) loads botocore's own modules at that moment and answers from them.
- urllib3's ``http2`` package runs ``importlib.metadata`` (and zipfile, shutil, tempfile) to
  check the version of ``h2`` for ``inject_into_urllib3``, which nothing in a boot calls;
  its submodule ``probe`` is what urllib3's connections use. The package is registered with
  its ``__init__`` run on the first use of a name it defines.

Each is put in place only before its module is loaded, never replacing modules already
there, and only where the installed package has the layout this expects.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading
import types
from typing import Any

DOCS, DOCSTRING = "botocore.docs", "botocore.docs.docstring"
STANDING_IN = ("ClientMethodDocstring", "PaginatorDocstring", "WaiterDocstring")
HTTP2 = "urllib3.http2"
HTTP2_NAMES = ("inject_into_urllib3", "extract_from_urllib3", "orig_HTTPSConnection", "version")
_init_lock = threading.Lock()


class _Undocumented(str):
    """A client method's (paginator's, waiter's) docstring, left empty."""

    __slots__ = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> _Undocumented:
        return super().__new__(cls, "")


def prepare() -> None:
    """The stand-ins in place, before anything imports botocore (else nothing is done)."""
    docs_on_demand()
    init_on_demand(HTTP2, HTTP2_NAMES)


def load() -> types.ModuleType:
    """``agent.aws`` (and so botocore), with the docs and urllib3's http2 on demand."""
    prepare()
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


def init_on_demand(name: str, names: tuple[str, ...]) -> bool:
    """Register package ``name`` with its ``__init__`` run on the first use of one of
    ``names`` (True), unless its top-level package is loaded already or has another layout."""
    top, _, rest = name.partition(".")
    if top in sys.modules or name in sys.modules:
        return False
    found = importlib.util.find_spec(top)  # a top-level package: found without loading it
    if found is None or not found.submodule_search_locations:
        return False
    path = os.path.join(next(iter(found.submodule_search_locations)), *rest.split("."))
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(path, "__init__.py"), submodule_search_locations=[path])
    if spec is None or spec.loader is None or not os.path.isfile(spec.origin or ""):
        return False
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def first_use(attr: str) -> Any:
        if attr not in names:  # a submodule (the import system asks first), or nothing
            raise AttributeError(attr)
        with _init_lock:
            if package.__dict__.get("__getattr__") is first_use:
                del package.__getattr__
                loader.exec_module(package)
        return getattr(package, attr)

    package.__getattr__ = first_use  # type: ignore[method-assign]
    sys.modules[name] = package
    return True

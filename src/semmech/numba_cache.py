"""UMAP with numba's on-disk cache switched on.

umap-learn (and pynndescent) JIT-compile a few hundred numba functions without ``cache=True``,
so every fresh process spends 10-20 s compiling before its first UMAP fit; a workflow runs one
process per prompt and per figure. Turning caching on for those dispatchers before their first
call makes every later process load the machine code instead (about 0.1 s). The cached code is
the code a fresh compilation produces, so results are unchanged. numba keeps the cache next to
the library's sources when that directory is writable, else in the user's cache directory
(``NUMBA_CACHE_DIR`` overrides both), and writes it atomically, so parallel jobs may share it.
"""

from __future__ import annotations

import sys
from types import ModuleType

import umap
from numba.core.caching import NullCache
from numba.core.registry import CPUDispatcher

__all__ = ["load_umap", "enable_caching"]

_CACHED_PACKAGES = ("umap", "pynndescent")


def enable_caching(packages: tuple[str, ...] = _CACHED_PACKAGES) -> int:
    """Switch on numba's disk cache for every not-yet-cached dispatcher defined in the
    already-imported modules of ``packages``. Returns how many were switched on."""
    n = 0
    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] not in packages:
            continue
        for value in list(vars(module).values()):
            if isinstance(value, CPUDispatcher) and isinstance(value._cache, NullCache):
                value.enable_caching()
                n += 1
    return n


def load_umap() -> ModuleType:
    """The ``umap`` module with its numba functions cached on disk (see the module docstring).

    Importing this module already switched caching on (below); calling again is cheap and
    catches dispatchers of umap submodules imported since."""
    enable_caching()
    return umap


# umap compiles lazily, at a dispatcher's first call: switching caching on right after the
# import, before anything calls into umap, is enough.
enable_caching()

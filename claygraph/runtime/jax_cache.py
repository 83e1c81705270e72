"""JAX's persistent compilation cache, on by default in a per-user folder, so that a fresh process loads
the programs an earlier one compiled instead of compiling them again.

Folder: $CLAYGRAPH_JAX_CACHE if set to a path, else $XDG_CACHE_HOME/claygraph/jax (default
~/.cache/claygraph/jax). Opt out with CLAYGRAPH_JAX_CACHE=0 (or off/false/no). A cache folder the user
already gave JAX (jax_compilation_cache_dir, JAX_COMPILATION_CACHE_DIR) is left as it is. The folder
is not pruned (JAX's size cap keeps access-time files that several processes sharing one folder race on):
delete it at any time. JAX writes the cache from process 0 only:
in a multi-process (Ray) group the other workers read what process 0 wrote and compile the rest.
"""
from __future__ import annotations

import os
from pathlib import Path

ENV = "CLAYGRAPH_JAX_CACHE"
OFF = frozenset({"0", "off", "false", "no"})
MIN_COMPILE_S = 0.0  # every program: a fresh process compiles nothing it compiled before


def cache_folder() -> Path | None:
    """Where the cache lives, or None when the user opted out."""
    value = os.environ.get(ENV, "").strip()
    if value.lower() in OFF:
        return None
    if value:
        return Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "claygraph" / "jax"


def enable() -> Path | None:
    """Point JAX's persistent compilation cache at cache_folder(); returns the folder in use (None: off)."""
    import jax

    if jax.config.jax_compilation_cache_dir or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return Path(jax.config.jax_compilation_cache_dir or os.environ["JAX_COMPILATION_CACHE_DIR"])
    folder = cache_folder()
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a read-only home: run without the cache rather than fail
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_S)
    return folder

"""Programs kept across processes: the inference loops' jitted functions exported once (jax.export:
StableHLO with the argument shardings) into a folder beside JAX's persistent compilation cache, keyed
like the in-process cache, so that a fresh process with a warm cache traces and lowers nothing it
traced before; JAX's persistent cache then loads the compiled executable of the same module.

Where a function lives in the store is a sha256 of everything the exported program depends on:
the split function's CacheKey (graph fingerprint, split, layout, devices), the caller's own key (the
loop's settings), the arguments' tree, shapes, dtypes and shardings, the versions of jax, jaxlib,
optax and numpyro, and the bytes of claygraph's own source (a changed claygraph never loads a program
an older one exported). The folder is `programs/` inside the JAX cache folder
(claygraph.runtime.jax_cache); CLAYGRAPH_JAX_CACHE=0 turns both off. A stored program that cannot be
read is exported again; a function that cannot be exported (a host callback, say) runs as plain jit.
Writes are atomic (a temporary file renamed), so processes sharing the folder never read half a file.

The exported function takes and returns flat lists of arrays (jax.export serialises only the pytree
node types registered with it); the output's tree is stored beside it as a skeleton (its leaves
numbered) pickled with the program: the folder is the user's own cache, as trusted as JAX's.
"""
from __future__ import annotations

import hashlib
import logging
import os
import pickle
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax

from claygraph.runtime.jax_cache import cache_folder

log = logging.getLogger("claygraph.runtime")

FORMAT = 1  # the layout of a stored file; a new one never reads an old one
STATS = {"loaded": 0, "exported": 0, "plain": 0}  # this process's outcomes (tests and the bench read them)


def store_folder() -> Path | None:
    """The folder programs are stored in, or None when the cache is off."""
    folder = cache_folder()
    return None if folder is None else folder / "programs"


_CODE: str | None = None


def code_fingerprint() -> str:
    """sha256 of claygraph's source files (their paths and bytes), computed once per process."""
    global _CODE
    if _CODE is None:
        root = Path(__file__).resolve().parents[1]
        h = hashlib.sha256()
        for path in sorted(root.rglob("*.py")):
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
        _CODE = h.hexdigest()
    return _CODE


def _versions() -> str:
    import jaxlib
    import numpyro
    import optax

    return f"jax {jax.__version__} jaxlib {jaxlib.__version__} optax {optax.__version__} numpyro {numpyro.__version__}"


def _spread(x) -> bool:
    """An array over several devices: its sharding is part of the program. One on a single device (a
    scalar made by jnp.int32(...)) goes wherever the program runs, as under jit."""
    return isinstance(x, jax.Array) and len(x.sharding.device_set) > 1


def _aval(x) -> tuple:
    """What a stored program depends on in one argument: shape, dtype, weak type and, for an array over
    several devices, its sharding (nothing is transferred to find them)."""
    if isinstance(x, jax.Array):
        return (x.shape, str(x.dtype), bool(getattr(x, "weak_type", False)), repr(x.sharding) if _spread(x) else None)
    return (jax.numpy.shape(x), str(jax.numpy.result_type(x)), False, None)


class Stored:
    """`jax.jit(fn, donate_argnums=...)` whose traced and lowered program is kept in the store: called with
    arguments of a signature seen before (in this process or, through the store, in an earlier one), it
    runs the stored program without tracing `fn`. `key` says what `fn` is (hashable, with a stable repr)."""

    def __init__(self, fn: Callable, key: Any, donate_argnums: int | Sequence[int] = ()):
        self._fn = fn
        self._key = key
        self._donate = (donate_argnums,) if isinstance(donate_argnums, int) else tuple(donate_argnums)
        self._calls: dict = {}

    def __call__(self, *args):
        leaves, tree = jax.tree.flatten(args)
        signature = (tree, tuple(_aval(x) for x in leaves))
        call = self._calls.get(signature)
        if call is None:
            call = self._calls[signature] = self._resolve(args, leaves, tree, signature)
        return call(*args)

    def _digest(self, signature) -> str:
        h = hashlib.sha256()
        for part in (f"format {FORMAT}", repr(self._key), repr(signature[0]), repr(signature[1]),
                     f"donate {self._donate}", _versions(), code_fingerprint()):
            h.update(part.encode())
            h.update(b"\0")
        return h.hexdigest()

    def _flat_donated(self, args) -> tuple[int, ...]:
        out, start = [], 0
        for i, a in enumerate(args):
            n = len(jax.tree.leaves(a))
            if i in self._donate:
                out.extend(range(start, start + n))
            start += n
        return tuple(out)

    def _resolve(self, args, leaves, tree, signature) -> Callable:
        plain = jax.jit(self._fn, donate_argnums=self._donate)
        folder = store_folder()
        if folder is None:
            STATS["plain"] += 1
            return plain
        path = folder / f"{self._digest(signature)}.program"
        donated = self._flat_donated(args)
        loaded = _parse(path)
        if loaded is None:
            try:
                blob = self._export(leaves, tree, donated)
            except Exception as e:  # not exportable (host callbacks, ...): this process runs it as plain jit
                log.debug("program %r not stored: %s: %s", self._key, type(e).__name__, e)
                STATS["plain"] += 1
                return plain
            _write(path, blob)
            # run what was stored, read back: a deserialised program's outputs lose their weak types, and
            # the next call's signature (its arguments are these outputs) must be the one later processes see
            loaded = _parse(path, blob)
            if loaded is None:  # (cannot happen with a working serialiser; never worth a failed fit)
                STATS["plain"] += 1
                return plain
            STATS["exported"] += 1
        else:
            STATS["loaded"] += 1
        exported, out_tree = loaded
        call = jax.jit(exported.call, donate_argnums=donated)
        return lambda *a: jax.tree.unflatten(out_tree, call(*jax.tree.leaves(a)))

    def _export(self, leaves, tree, donated) -> bytes:
        out_tree = []

        def flat(*xs):
            out = self._fn(*jax.tree.unflatten(tree, xs))
            out_leaves, t = jax.tree.flatten(out)
            out_tree.append(t)
            return out_leaves

        specs = [jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding) if _spread(x)
                 else jax.ShapeDtypeStruct(jax.numpy.shape(x), jax.numpy.result_type(x)) for x in leaves]
        exported = jax.export.export(jax.jit(flat, donate_argnums=donated))(*specs)
        skeleton = jax.tree.unflatten(out_tree[0], list(range(out_tree[0].num_leaves)))
        return pickle.dumps((FORMAT, skeleton, bytes(exported.serialize())))


def _parse(path: Path, blob: bytes | None = None):
    """(exported, out tree) from a stored file (or its bytes), or None where there is none or it cannot be read."""
    try:
        blob = path.read_bytes() if blob is None else blob
    except OSError:
        return None
    try:
        fmt, skeleton, program = pickle.loads(blob)
        if fmt != FORMAT:
            return None
        return jax.export.deserialize(bytearray(program)), jax.tree.structure(skeleton)
    except Exception as e:  # a damaged or foreign file: export again (and replace it)
        log.debug("stored program %s unreadable (%s: %s); exporting again", path.name, type(e).__name__, e)
        return None


def _write(path: Path, blob: bytes) -> None:
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".program")
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        os.replace(tmp, path)
    except OSError as e:  # a read-only or full cache folder: the program still runs, it is just not kept
        log.debug("program not written to %s: %s: %s", path.parent, type(e).__name__, e)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)

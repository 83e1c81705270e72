"""claygraph: split a NumPyro model across devices along the axis a cost model picks.

The public API is the list below; everything else is internal. `infer` and `glm` load on first
use (they pull in optax and BlackJAX, which must not initialise JAX inside a Ray worker before
it joins its distributed group).
"""
from claygraph import errors, runtime
from claygraph.frontend import parquet
from claygraph.frontend.data import Data, array, index
from claygraph.ir.lower import lower
from claygraph.partition.cluster import ClusterSpec
from claygraph.partition.plan import partition
from claygraph.runtime import jax_cache as _jax_cache
from claygraph.runtime.local import compile  # noqa: A004 - the public name

__version__ = "0.1.0"

_jax_cache.enable()  # JAX's persistent compilation cache in a per-user folder (CLAYGRAPH_JAX_CACHE=0: off)

__all__ = ["ClusterSpec", "Data", "array", "compile", "errors", "glm", "index", "infer", "lower", "parquet",
           "partition", "runtime", "__version__"]


def __getattr__(name: str):
    if name in ("infer", "glm"):
        import importlib

        return importlib.import_module(f"claygraph.{name}")
    raise AttributeError(f"module 'claygraph' has no attribute {name!r}")

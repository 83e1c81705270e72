"""Runtimes: where a compiled program runs. `Ray` is imported lazily (importing claygraph never imports ray)."""
from claygraph.runtime import calibration as _calibration  # noqa: F401 - ClusterSpec.local's first-use calibration
from claygraph.runtime.local import Local, compile  # noqa: A004 - the public name
from claygraph.runtime.protocol import Runtime

__all__ = ["Local", "Ray", "Runtime", "compile"]


def __getattr__(name: str):
    if name == "Ray":
        from claygraph.runtime.ray import Ray

        return Ray
    raise AttributeError(name)

"""Runtimes: where a compiled program runs. `Ray` is imported lazily (importing claygraph never imports ray)."""
from claygraph.runtime.local import Local

__all__ = ["Local", "Ray"]


def __getattr__(name: str):
    if name == "Ray":
        from claygraph.runtime.ray import Ray

        return Ray
    raise AttributeError(name)

"""The front end: named-dim data and tracing NumPyro models."""
from claygraph.frontend.data import Array, Data, array, index

__all__ = ["Array", "Data", "array", "index"]

"""claygraph: split a NumPyro model across devices along the axis a cost model picks.

The public API is the list below; everything else is internal.
"""
from claygraph import errors
from claygraph.frontend.data import Data, array, index
from claygraph.ir.lower import lower

__version__ = "0.1.0"

__all__ = ["Data", "array", "index", "lower", "errors", "__version__"]

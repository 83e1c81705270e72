"""The intermediate graph: values with named dims, nodes, lowering and dim inference."""
from claygraph.ir.graph import Graph, Inputs, Node, Value
from claygraph.ir.lower import lower

__all__ = ["Graph", "Inputs", "Node", "Value", "lower"]

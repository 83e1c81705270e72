"""Inference on a split program: MAP (L-BFGS), Laplace, ADVI, NUTS/HMC."""
from claygraph.infer.map import MAPResult, map  # noqa: A004 - cg.infer.map is the public name
from claygraph.infer.nuts import MCMCResult, hmc, nuts

__all__ = ["MAPResult", "MCMCResult", "hmc", "map", "nuts"]

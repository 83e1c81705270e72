"""Inference on a split program: MAP (L-BFGS), Laplace, ADVI, NUTS/HMC."""
from claygraph.infer.laplace import LaplaceResult, laplace
from claygraph.infer.map import MAPResult, map  # noqa: A004 - cg.infer.map is the public name
from claygraph.infer.nuts import MCMCResult, hmc, nuts
from claygraph.infer.vi import VIResult, vi

__all__ = ["LaplaceResult", "MAPResult", "MCMCResult", "VIResult", "hmc", "laplace", "map", "nuts", "vi"]

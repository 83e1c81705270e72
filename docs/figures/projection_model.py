# The model and abstract data of docs/cluster.md's scaling projection (W3's model at 200M rows, 5M products):
# claygraph inspect docs/figures/projection_model.py --cluster p5 --nodes 1,2,4,8,16,64 \
#     --png docs/figures/projection-p5.png
from claygraph import examples

model = examples.hier_logistic_model
data = examples.make_hier_logistic(n=200_000_000, products=5_000_000, d=10, abstract=True).data

"""Partitioning: cost model and the stage plan.

``make_plan(gm, example_inputs, stages=2)`` cuts a captured graph into stages contiguous in
topological order; the resulting ``Plan`` is plain data (``plan.to_json()``).
"""

from .cost import NodeCost, estimate_costs, graph_dag, profile_nodes
from .partitioner import PartitionError, make_plan
from .plan import Plan, Stage

__all__ = [
    "NodeCost", "estimate_costs", "graph_dag", "profile_nodes",
    "PartitionError", "make_plan", "Plan", "Stage",
]

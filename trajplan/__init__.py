"""trajplan: the Trajectory Transformer as a fast offline-RL planner.

Pipeline: data (Minari -> transitions) -> tokens (discretizer) -> model (TT GPT)
-> train -> plan (beam search) -> evaluate.
"""

from trajplan.errors import TrajplanError

__version__ = "0.1.0"
__all__ = ["TrajplanError", "__version__"]

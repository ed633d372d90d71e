"""longseq: STCA + request-level batching + length extrapolation for 10k-event user histories.

Importing the package has no side effects: it imports neither torch.distributed state nor any
heavy submodule. Import the stage you need (``longseq.data``, ``longseq.model``, ...).
"""

__version__ = "0.1.0"

"""Sizing a job without a cluster: TorchRec's sharding plan for a declared topology.

- `topology`: the declared cluster (``TopologyConfig``, ``dry_run_topology`` in a training job).
- `dry_run`: one plan and the per-rank embedding memory it implies (``dry_run=true``).
- `plan_table`: TorchRec's planner over several cluster sizes, as a page (docs/planning.md).

Everything here builds the model on the meta device: no GPU, no table memory, no data set. The
command-line entry points compose the training job and live in `longseq.train`
(``python -m longseq.train ... dry_run=true``, ``python -m longseq.train.plan_table``).
"""

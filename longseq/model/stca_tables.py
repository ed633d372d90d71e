"""Serving STCA candidates at the cost of attention: a one-request state with its events indexed
by id (`longseq.model.ops.tables.MatchTables`).

With the id-match bias and the count channel (the model's default recipe), scoring a candidate
the padded way compares its ids with every one of the ``L`` events to build the bias and the
counts: at ``L = 10k`` that costs several times the attention itself. `with_tables` gives the
state its `MatchTables` (built once per state, or kept up to date across requests by
`longseq.serve.incremental`), and `STCATower.score` then reads the count channel from per-id
tables and the match bias as a correction over the candidate's matched events only
(`longseq.model.ops.matched`): the same function, to float rounding. Pure torch.
"""

from __future__ import annotations

import dataclasses

from longseq.model.ops.kernels import Kernel
from longseq.model.ops.tables import MatchTables
from longseq.model.stca import STCAState, STCATower

__all__ = ["tables_apply", "tower_uses_tables", "with_tables"]


def tower_uses_tables(tower: STCATower) -> bool:
    """Whether ``tower`` scores through match tables at all: the id-match bias without the soft
    match (a learned per-pair term), in the padded layout, with a kernel that keeps keys and
    values (``kv``, ``sdpa``, ``reference``; not ``absorbed``)."""
    return bool(
        tower.cfg.match_bias
        and not tower.cfg.soft_match
        and tower.layout == "padded"
        and all(a.kernel is not Kernel.ABSORBED for a in tower._attns())
    )


def tables_apply(tower: STCATower, state: STCAState) -> bool:
    """Whether `with_tables` indexes ``state``: `tower_uses_tables`, and ``state`` is a padded
    state of one request without padding."""
    return bool(
        tower_uses_tables(tower)
        and state.hist_lengths is None
        and state.hist_ids is not None
        and state.hist_ids.shape[0] == 1
        and (state.hist_mask is None or bool(state.hist_mask.all()))
    )


def with_tables(tower: STCATower, state: STCAState, tables: MatchTables | None = None) -> STCAState:
    """``state`` with its events indexed by id (``tables``: ones already built for exactly these
    events, else built here), or ``state`` itself where `tables_apply` says no."""
    if not tables_apply(tower, state):
        return state
    assert state.hist_ids is not None  # tables_apply checked it
    ids = state.hist_ids[0]
    tables = MatchTables.build(ids) if tables is None else tables
    if len(tables) != ids.shape[0]:
        raise ValueError(f"tables of {len(tables)} events for a state of {ids.shape[0]} events")
    return dataclasses.replace(state, tables=tables)

"""`LongSeqModel`: EmbeddingCollection -> tokens -> tower -> per-task heads (a plain nn.Module).

``forward(batch)`` is one embedding lookup followed by `SequenceInteraction`
(`longseq.model.interaction`) on the looked-up jagged tensors. Keeping the top-level forward that
small keeps it fx-traceable for TorchRec's pipelines (the interaction is a leaf in their tracer).
`ModelConfig` and the saved-config reader live in `longseq.model.model_config` and are
re-exported here. This module imports nothing distributed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from longseq.data.batch import RequestBatch
from longseq.data.features import FeatureSpec
from longseq.model.embeddings import TableSizes, build_embedding_collection
from longseq.model.interaction import SequenceInteraction
from longseq.model.model_config import ModelConfig, model_config_from_saved
from longseq.model.towers import RECIPE, TOWERS, Tower

__all__ = [
    "RECIPE",
    "TOWERS",
    "LongSeqModel",
    "ModelConfig",
    "SequenceInteraction",
    "Tower",
    "model_config_from_saved",
]


class LongSeqModel(nn.Module):
    """The full ranking model over a `RequestBatch`.

    Args:
        cfg: model hyper-parameters.
        sizes: embedding vocabulary sizes (from the data set's ``meta.json``).
        tasks: label tasks, in the order of the logit columns.
        device: ``"meta"`` defers table allocation to TorchRec sharding.
        features: the data set's declared side features (``meta.json``'s ``features``); the
            model reads them unless ``cfg.use_features`` is false (`features` then is empty).
    """

    def __init__(
        self,
        cfg: ModelConfig,
        sizes: TableSizes,
        tasks: list[str],
        device: torch.device | str = "cpu",
        features: Sequence[FeatureSpec] = (),
    ) -> None:
        super().__init__()
        cfg.validate()
        cfg.validate_for(features, tasks)
        self.cfg, self.tasks = cfg, list(tasks)
        #: the side features the model reads (the batches must carry them: `collate`)
        self.features: tuple[FeatureSpec, ...] = tuple(features) if cfg.use_features else ()
        self.ec = build_embedding_collection(
            sizes, cfg.embedding_dim, device, cfg.embedding_init_std, self.features
        )
        self.interaction = SequenceInteraction(cfg, len(tasks), self.features)
        weights = [float(cfg.task_weights.get(t, 1.0)) for t in self.tasks]
        self.task_weights: torch.Tensor
        self.register_buffer("task_weights", torch.tensor(weights), persistent=False)

    def forward(self, batch: RequestBatch) -> torch.Tensor:
        """Logits ``[N, num_tasks]``."""
        ids = batch.sparse if self.interaction.id_features else None
        return self.interaction(
            self.ec(batch.sparse), batch.num_targets, ids, batch.dense, batch.tgt_dense,
            batch.tgt_bags,
        )  # fmt: skip

    def aux_loss(self) -> torch.Tensor | None:
        """The weighted auxiliary loss of the last training forward (STCA's co-occurrence loss,
        ``model.stca.soft_match_cooccur``), or None; each forward's is returned once. The
        training objective is ``loss(...) + aux_loss()`` (`longseq.train.task.TrainTask`)."""
        return self.interaction.tower.pop_aux_loss()

    def loss(self, logits: torch.Tensor, batch: RequestBatch) -> torch.Tensor:
        """BCE per task, their ``cfg.task_weights``-weighted mean, then the mean over targets
        per impression or per request (``cfg.loss_weighting``)."""
        bce = F.binary_cross_entropy_with_logits(logits, batch.labels, reduction="none")
        w = self.task_weights.to(bce.dtype)
        per = (bce * w).sum(1) / w.sum().clamp(min=1e-12)
        if self.cfg.loss_weighting == "impression":
            return per.mean()
        req = torch.repeat_interleave(
            torch.arange(batch.num_targets.numel(), device=per.device), batch.num_targets
        )
        per_req = torch.zeros(batch.num_targets.numel(), device=per.device).index_add(0, req, per)
        return (per_req / batch.num_targets.clamp(min=1)).mean()

"""The RankMixer head (``model.head=rankmixer``): named feature tokens -> `RankMixer` -> task logits.

``logit_task = w_taskᵀ mean_t RankMixer([z, u_1..u_K, c_1..c_C])_t + b_task`` (pure torch).

Tokens, each projected to the token width ``D`` by its own linear layer:

* ``z``: the sequence tower's output for the target;
* user-side tokens ``u_k`` (``[B, w]``, one row per request): projected ONCE per request by
  `RankMixerHead.user_tokens` and broadcast to the request's targets in `RankMixerHead.forward`
  (request-level batching in compute, as the tower's user side). Today: ``history``, the mean
  of the request's history tokens;
* candidate-side tokens ``c_c`` (``[N, w]``, one row per target). Today: the target's ``item``
  and ``category`` embeddings.

The tokens are named by dicts of widths, so a feature (a user profile field, a candidate
attribute) is one more entry: the token count ``T`` follows, and ``rankmixer.dim`` must stay a
multiple of it. Multi-task: the tasks share the RankMixer trunk and the pooled vector; each task
has its own linear logit (one ``Linear(D, tasks)``), as the paper's per-task ``w, b``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from longseq.model.rankmixer import RankMixer, check_shape


@dataclass
class RankMixerConfig:
    """``model.rankmixer``: the RankMixer head (used when ``model.head=rankmixer``).

    Attributes:
        dim: token width ``D``, a multiple of the token count ``T`` (4 without side features:
            ``z``, ``history``, ``item``, ``category``; one more per feature group); 0 (the
            default): the smallest multiple of ``T`` that is at least 64.
        layers: RankMixer layers ``L``.
        heads: token-mixing heads ``H``; 0 means the token count, the only value the residual
            allows (docs/model.md, "RankMixer").
        ffn_mult: per-token FFN expansion ``k`` (hidden width ``k D``).
        dropout: on each per-token FFN's output.
        history_token: a user-side token, the mean of the request's history tokens (computed
            once per request).
    """

    dim: int = 0
    layers: int = 2
    heads: int = 0
    ffn_mult: float = 4.0
    dropout: float = 0.0
    history_token: bool = True

    def resolved_dim(self, num_tokens: int) -> int:
        """``dim``, or for 0 the smallest multiple of ``num_tokens`` that is at least 64."""
        return self.dim or num_tokens * -(-64 // max(num_tokens, 1))

    def validate(self, num_tokens: int, prefix: str = "model.rankmixer") -> None:
        """Raise ``ValueError`` naming ``{prefix}.<key>`` (``num_tokens``: ``T`` of the head)."""
        if self.dim < 0:
            raise ValueError(f"{prefix}.dim must be >= 0 (0: automatic), got {self.dim}")
        if self.heads < 0:
            raise ValueError(f"{prefix}.heads must be >= 0 (0: the token count), got {self.heads}")
        check_shape(
            num_tokens,
            self.resolved_dim(num_tokens),
            self.layers,
            self.heads or None,
            self.ffn_mult,
            self.dropout,
            prefix,
        )


class RankMixerHead(nn.Module):
    """Per-task logits of named tokens through a shared `RankMixer`.

    Args:
        user_widths: widths of the user-side features (one row per request), by name.
        target_widths: widths of the candidate-side features (one row per target), by name;
            the first (``z``, the tower output) is the first token, the user tokens follow,
            then the others.
        cfg: the head's config.
        num_tasks: logit columns.
    """

    def __init__(
        self,
        user_widths: dict[str, int],
        target_widths: dict[str, int],
        cfg: RankMixerConfig,
        num_tasks: int,
    ) -> None:
        super().__init__()
        num_tokens = len(user_widths) + len(target_widths)
        cfg.validate(num_tokens)
        d = cfg.resolved_dim(num_tokens)
        self.user_proj = nn.ModuleDict({k: nn.Linear(w, d) for k, w in user_widths.items()})
        self.target_proj = nn.ModuleDict({k: nn.Linear(w, d) for k, w in target_widths.items()})
        self.mixer = RankMixer(num_tokens, d, cfg.layers, None, cfg.ffn_mult, cfg.dropout)
        self.logit = nn.Linear(d, num_tasks)

    @property
    def user_features(self) -> tuple[str, ...]:
        """Names of the user-side features `user_tokens` takes."""
        return tuple(self.user_proj)

    def user_tokens(self, feats: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """User-side features ``{name: [B, w]}`` -> tokens ``[B, U, D]`` (None: no user token)."""
        if not self.user_proj:
            return None
        _require(feats, self.user_proj, "user")
        return torch.stack([p(feats[k]) for k, p in self.user_proj.items()], dim=-2)

    def forward(
        self,
        target_feats: dict[str, torch.Tensor],
        user_tokens: torch.Tensor | None,
        num_targets: torch.Tensor,
    ) -> torch.Tensor:
        """Candidate-side features ``{name: [N, w]}`` and the requests' `user_tokens`
        ``[B, U, D]`` (``num_targets [B]`` targets each, in request order) -> logits
        ``[N, tasks]``: each request's user tokens broadcast to its targets, then `mix`."""
        if user_tokens is not None:
            if user_tokens.shape[0] != num_targets.numel():
                raise ValueError(
                    f"{user_tokens.shape[0]} requests of user tokens, {num_targets.numel()} in "
                    "num_targets"
                )
            user_tokens = user_tokens.repeat_interleave(num_targets, dim=0)
        return self.mix(target_feats, user_tokens)

    def mix(
        self, target_feats: dict[str, torch.Tensor], user_tokens: torch.Tensor | None
    ) -> torch.Tensor:
        """Candidate-side features ``{name: [..., w]}`` and user tokens already broadcast to the
        same leading dims ``[..., U, D]`` -> logits ``[..., tasks]`` (tokens ``[z, u.., c..]``
        through the mixer, mean-pooled, one linear logit per task)."""
        _require(target_feats, self.target_proj, "target")
        cand = [p(target_feats[k]) for k, p in self.target_proj.items()]
        tokens = cand[:1]  # z first, then the user side, then the candidate's own features
        if user_tokens is not None:
            tokens += user_tokens.unbind(-2)
        x = torch.stack(tokens + cand[1:], dim=-2)
        return self.logit(self.mixer(x).mean(dim=-2))


def _require(feats: dict[str, torch.Tensor], wanted: nn.ModuleDict, side: str) -> None:
    missing = [k for k in wanted if k not in feats]
    if missing:
        raise ValueError(f"the RankMixer head needs the {side}-side features {missing}")

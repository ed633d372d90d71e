"""Side features in the model: collation of every kind on every side, request-level = pointwise
(scores and gradients) with features for both heads, the split user/candidate path = forward,
user features computed once per request, ``model.use_features=false`` ignores them, and the
tables join the one EmbeddingCollection."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from side_data import SPECS, with_features

from longseq.data.collate import collate, cut_targets
from longseq.data.features import candidate_features, request_features
from longseq.model.model import LongSeqModel, ModelConfig
from longseq.model.rankmixer_head import RankMixerConfig
from longseq.model.stca import STCAConfig
from longseq.model.user_side import split_logits

WINDOWS = np.array([0, 1, 5, 1000, 17, 3, 64, 2, 8, 40])


@pytest.fixture(scope="module")
def table(requests_table):
    return with_features(requests_table)


def _cfg(head: str = "mlp", **over: object) -> ModelConfig:
    return ModelConfig(
        embedding_dim=8,
        pos_dim=4,
        stca=STCAConfig(d_model=16, num_heads=2, num_layers=2),
        head=head,
        head_hidden=[16],
        rankmixer=RankMixerConfig(layers=2, ffn_mult=2.0),
        **over,
    )


def test_collate_reads_every_kind(table):
    b = collate(table, ["click"], features=SPECS)
    n, t = table.num_rows, int(b.num_targets.sum())
    sparse = [s.key for s in SPECS if s.sparse]
    assert b.sparse.keys()[-len(sparse) :] == sparse
    assert b.sparse["feat_age"].lengths().tolist() == [1] * n
    tags = table.column("feat_tags").to_pylist()
    assert b.sparse["feat_tags"].lengths().tolist() == [len(x) for x in tags]
    assert b.sparse["feat_tags"].values().tolist() == sum(tags, [])
    act = np.array(table.column("feat_activity").to_pylist())
    np.testing.assert_allclose(b.dense[:, 0].numpy(), (act - 3.0) / 2.0, rtol=1e-6)
    assert b.sparse["tgt_feat_creator"].lengths().tolist() == b.num_targets.tolist()
    genres = sum(table.column("tgt_feat_genres").to_pylist(), [])
    assert b.tgt_bags[:, 0].tolist() == [len(g) for g in genres]
    assert b.sparse["tgt_feat_genres"].values().tolist() == sum(genres, [])
    dur = np.array(sum(table.column("tgt_feat_duration").to_pylist(), []))
    assert b.tgt_dense.shape == (t, 1)
    np.testing.assert_allclose(b.tgt_dense[:, 0].numpy(), np.log1p(dur), rtol=1e-6)


def test_pointwise_repeats_the_user_side(table):
    pw = collate(table, ["click"], features=SPECS, pointwise=True)
    nt = pw.num_targets.numel()
    rep = np.repeat(
        np.arange(table.num_rows), [len(x) for x in table.column("tgt_item_id").to_pylist()]
    )
    ages = np.array(table.column("feat_age").to_pylist())[rep]
    assert pw.sparse["feat_age"].values().tolist() == ages.tolist()
    assert pw.dense.shape == (nt, 1)
    assert pw.sparse["tgt_feat_genres"].lengths().tolist() == pw.tgt_bags[:, 0].tolist()


def test_cut_targets_cuts_candidate_features_alike(table):
    cut, n = cut_targets(table, 2)
    assert n > 0
    for name in ("tgt_feat_creator", "tgt_feat_genres", "tgt_feat_duration"):
        full, kept = table.column(name).to_pylist(), cut.column(name).to_pylist()
        assert kept == [x[:2] for x in full]


@pytest.mark.parametrize(
    ("head", "tower"), [("mlp", "stca"), ("rankmixer", "stca"), ("mlp", "din"), ("mlp", "pooling")]
)
def test_request_level_equals_pointwise_with_features(table, sizes, head, tower):
    """A request's targets in one row (user features pooled once, broadcast) == each target in
    its own row with its own copy: same logits, loss and gradients, feature tables included;
    the baselines take the same features through the same head."""
    torch.manual_seed(0)
    model = LongSeqModel(_cfg(head, tower=tower), sizes, ["click"], features=SPECS)
    rlb = collate(table, ["click"], WINDOWS, features=SPECS)
    pw = collate(table, ["click"], WINDOWS, pointwise=True, features=SPECS)
    logits, grads = [], []
    for batch in (rlb, pw):
        model.zero_grad()
        out = model(batch)
        model.loss(out, batch).backward()
        logits.append(out.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    torch.testing.assert_close(logits[0], logits[1], atol=1e-5, rtol=0)
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-4)
    for spec in SPECS:
        if spec.sparse:  # every feature table learns
            key = f"ec.embeddings.feat_{spec.name}.weight"
            assert grads[0][key].abs().sum() > 0, key


@pytest.mark.parametrize("head", ["mlp", "rankmixer"])
def test_split_path_equals_forward_with_features(table, sizes, head):
    torch.manual_seed(0)
    model = LongSeqModel(_cfg(head), sizes, ["click"], features=SPECS).eval()
    batch = collate(table, ["click"], WINDOWS, features=SPECS)
    with torch.no_grad():
        torch.testing.assert_close(split_logits(model, batch), model(batch), atol=1e-5, rtol=0)


@pytest.mark.parametrize("head", ["mlp", "rankmixer"])
def test_features_change_the_scores_of_their_request_only(table, sizes, head):
    """A user feature moves every target of its request and no other; a candidate feature its
    target only."""
    torch.manual_seed(0)
    model = LongSeqModel(_cfg(head), sizes, ["click"], features=SPECS).eval()
    base = collate(table, ["click"], WINDOWS, features=SPECS)
    nt = base.num_targets
    with torch.no_grad():
        want = model(base)
        moved = dataclasses.replace(base, dense=base.dense.clone())
        moved.dense[1, 0] += 3.0
        diff = (model(moved) - want).abs().squeeze(1)
        req = torch.repeat_interleave(torch.arange(nt.numel()), nt)
        assert (diff[req == 1] > 1e-6).all() and (diff[req != 1] == 0).all()
        moved = dataclasses.replace(base, tgt_dense=base.tgt_dense.clone())
        moved.tgt_dense[4, 0] += 3.0
        diff = (model(moved) - want).abs().squeeze(1)
        assert diff[4] > 1e-6 and (torch.cat([diff[:4], diff[5:]]) == 0).all()


def test_use_features_false_ignores_them(table, sizes):
    model = LongSeqModel(_cfg(use_features=False), sizes, ["click"], features=SPECS)
    assert model.features == ()
    assert not any(c.name.startswith("feat_") for c in model.ec.embedding_configs())
    plain = LongSeqModel(_cfg(), sizes, ["click"])
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in plain.parameters())
    model(collate(table, ["click"], features=()))  # batches without feature columns serve it


def test_feature_tables_share_the_one_collection(sizes):
    model = LongSeqModel(_cfg(), sizes, ["click"], features=SPECS)
    tables = {c.name: c for c in model.ec.embedding_configs()}
    for spec in SPECS:
        if spec.sparse:
            cfg = tables[f"feat_{spec.name}"]
            assert (cfg.num_embeddings, cfg.feature_names) == (spec.cardinality, [spec.key])
    assert len(request_features(SPECS)) == 4 and len(candidate_features(SPECS)) == 3


def test_rankmixer_tokens_follow_the_groups(sizes):
    """Tokens: z, item, category, history + one per group (user, context, candidate, content);
    dim 0 resolves to the smallest multiple of the token count >= 64."""
    model = LongSeqModel(_cfg("rankmixer"), sizes, ["click"], features=SPECS)
    head = model.interaction.head
    assert list(head.user_proj) == ["history", "user", "context"]
    assert list(head.target_proj) == ["z", "item", "category", "candidate", "content"]
    assert head.user_proj["user"].in_features == 8 + 8 + 1  # age, pooled tags, activity
    assert head.logit.in_features == 64 + (8 - 64 % 8) % 8  # 8 tokens -> 64


def test_task_weights_weight_the_loss(table, sizes):
    torch.manual_seed(0)
    cfg = _cfg(task_weights={"a": 3.0, "b": 1.0})
    model = LongSeqModel(cfg, sizes, ["a", "b"], features=SPECS)
    batch = collate(table, ["click", "click"], features=SPECS)
    batch.labels[:, 1] = 1 - batch.labels[:, 1]
    logits = model(batch)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, batch.labels, reduction="none"
    ).mean(0)
    torch.testing.assert_close(model.loss(logits, batch), (3 * bce[0] + bce[1]) / 4)
    with pytest.raises(ValueError, match=r"model\.task_weights: 'c' is not a task"):
        LongSeqModel(_cfg(task_weights={"c": 1.0}), sizes, ["a"])

"""Single-process checks of cdface.parallel: sharding arithmetic, Partial FC sampling, the sharded head on
one rank against the replicated head, top-k against the miner, the memory formula against real tensors,
insightface import and the CLI. (Multi-rank behaviour: test_parallel_distributed.py.)"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from cdface.cli import main as cdface_main
from cdface.errors import ConfigError, FormatError, UnsafeFileError
from cdface.heads import create_head
from cdface.miners import hard_negative_centres, last_row_of_class
from cdface.parallel import (
    ShardedMarginHead,
    head_memory,
    import_insightface,
    load_sharded_head,
    num_sampled,
    reshard,
    sample_centres,
    save_sharded_head,
    shard_range,
    shard_sizes,
    sharded_cross_entropy,
)
from cdface.parallel.memory import backbone_parameters

DIM, CLASSES = 12, 17


def _close(actual: torch.Tensor, expected: torch.Tensor, tol: float = 1e-5) -> None:
    scale = max(float(expected.detach().abs().max()), 1.0) if expected.numel() else 1.0
    torch.testing.assert_close(actual.detach(), expected.detach(), rtol=tol, atol=tol * scale)


# ---------------------------------------------------------------- sharding arithmetic


@given(st.integers(1, 500), st.integers(1, 40))
def test_shard_range_partitions_classes_like_insightface(num_classes: int, world: int) -> None:
    if num_classes < world:
        with pytest.raises(ConfigError):
            shard_range(num_classes, 0, world)
        return
    ends = 0
    for rank in range(world):
        start, end = shard_range(num_classes, rank, world)
        assert start == ends  # contiguous, in rank order
        # insightface: num_local = C // W + (rank < C % W), class_start = C // W * rank + min(rank, C % W)
        assert end - start == num_classes // world + int(rank < num_classes % world)
        assert start == num_classes // world * rank + min(rank, num_classes % world)
        ends = end
    assert ends == num_classes
    assert max(shard_sizes(num_classes, world)) == math.ceil(num_classes / world)


def test_shard_range_rejects_a_rank_outside_the_world() -> None:
    with pytest.raises(ConfigError):
        shard_range(10, 3, 3)


def test_reshard_pieces_rebuild_the_full_matrix() -> None:
    full = torch.arange(CLASSES * 2, dtype=torch.float32).reshape(CLASSES, 2)
    for world in (1, 2, 3, 5):
        assert torch.equal(torch.cat([reshard(full, r, world) for r in range(world)]), full)


def test_num_sampled() -> None:
    assert num_sampled(10, 1.0) == 10
    assert num_sampled(10, 0.25) == 3
    assert num_sampled(10, 0.01) == 1
    with pytest.raises(ConfigError):
        num_sampled(10, 0.0)
    with pytest.raises(ConfigError):
        num_sampled(10, 1.5)


# ---------------------------------------------------------------- Partial FC sampling


def test_sample_centres_keeps_positives_first_and_draws_distinct_negatives() -> None:
    labels = torch.tensor([7, -1, 2, 7, -1, 4])
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        index, remapped = sample_centres(labels, num_local=12, num_sample=6, generator=g)
        assert index[:3].tolist() == [2, 4, 7]
        assert index.numel() == 6 and len(set(index.tolist())) == 6
        assert not set(index[3:].tolist()) & {2, 4, 7}
        assert remapped.tolist() == [2, -1, 0, 2, -1, 1]
        assert torch.equal(index[remapped[remapped >= 0]], labels[labels >= 0])


def test_sample_centres_keeps_every_positive_beyond_the_quota() -> None:
    labels = torch.tensor([5, 1, 3, 1])
    index, remapped = sample_centres(labels, num_local=8, num_sample=2)
    assert index.tolist() == [1, 3, 5]
    assert remapped.tolist() == [2, 0, 1, 0]


def test_sample_centres_is_reproducible_with_a_generator() -> None:
    labels = torch.tensor([0, -1])
    a, _ = sample_centres(labels, 50, 10, torch.Generator().manual_seed(3))
    b, _ = sample_centres(labels, 50, 10, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


# ---------------------------------------------------------------- one rank == the replicated head


def _data(seed: int = 0, rows: int = 9) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(CLASSES, DIM, generator=g),
        torch.randn(rows, DIM, generator=g) * 4,
        torch.randint(0, CLASSES, (rows,), generator=g),
    )


@pytest.mark.parametrize("name", ["arcface", "cosface", "combined", "adaface", "magface"])
def test_one_rank_sharded_head_equals_margin_head(name: str) -> None:
    weight, x, y = _data()
    full = create_head(name, DIM, CLASSES)
    with torch.no_grad():
        full.weight.copy_(weight)
    sharded = ShardedMarginHead(DIM, CLASSES, name)
    sharded.load_full_weight(weight)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref = full(x1, y)
    ref_loss = F.cross_entropy(ref.logits, y) + (ref.aux_loss if ref.aux_loss is not None else 0.0)
    ref_loss.backward()
    out = sharded(x2, y)
    out.loss.backward()
    _close(out.loss, ref_loss)
    _close(out.losses, F.cross_entropy(ref.logits, y, reduction="none"))
    _close(out.target_cosine, ref.target_cosine)
    _close(x2.grad, x1.grad)
    _close(sharded.weight.grad, full.weight.grad)
    assert out.sampled_index is None


def test_partial_fc_step_is_the_full_head_on_the_sampled_columns() -> None:
    weight, x, y = _data(rows=4)
    head = ShardedMarginHead(DIM, CLASSES, "arcface", sample_rate=0.5, generator=torch.Generator().manual_seed(1))
    head.load_full_weight(weight)
    out = head(x, y)
    out.loss.backward()
    index = out.sampled_index
    assert index.numel() == max(num_sampled(CLASSES, 0.5), len(torch.unique(y)))
    # reference: a full head over only the sampled centres, labels = positions in the index
    ref = create_head("arcface", DIM, index.numel())
    sub = weight[index].clone()
    with torch.no_grad():
        ref.weight.copy_(sub)
    position = {int(c): i for i, c in enumerate(index)}
    y_sub = torch.tensor([position[int(c)] for c in y])
    ref_loss = F.cross_entropy(ref(x, y_sub).logits, y_sub)
    ref_loss.backward()
    _close(out.loss, ref_loss)
    _close(head.weight.grad[index], ref.weight.grad)
    unsampled = torch.ones(CLASSES, dtype=torch.bool)
    unsampled[index] = False
    assert torch.count_nonzero(head.weight.grad[unsampled]) == 0


def test_partial_fc_uses_every_centre_in_eval_mode() -> None:
    weight, x, y = _data()
    head = ShardedMarginHead(DIM, CLASSES, "cosface", sample_rate=0.3).eval()
    head.load_full_weight(weight)
    out = head(x, y)
    assert out.sampled_index is None and out.logits.shape == (x.shape[0], CLASSES)


def test_curricularface_is_refused_and_bad_labels_raise() -> None:
    with pytest.raises(ConfigError, match="curricularface"):
        ShardedMarginHead(DIM, CLASSES, "curricularface")
    head = ShardedMarginHead(DIM, CLASSES, "arcface")
    with pytest.raises(RuntimeError, match="class ids"):
        head(torch.randn(2, DIM), torch.tensor([0, CLASSES]))


def test_sharded_cross_entropy_on_one_rank_is_cross_entropy() -> None:
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(6, 9, generator=g) * 20).requires_grad_()
    target = torch.randint(0, 9, (6,), generator=g)
    ours = sharded_cross_entropy(logits, target, 0, 6)
    (ours * torch.arange(1.0, 7.0)).sum().backward()  # a per-row weighting goes through backward too
    grad = logits.grad.clone()
    logits.grad = None
    ref = F.cross_entropy(logits, target, reduction="none")
    (ref * torch.arange(1.0, 7.0)).sum().backward()
    _close(ours, ref)
    _close(grad, logits.grad)


# ---------------------------------------------------------------- top-k on one rank == the miner


@pytest.mark.parametrize("num_negatives", [3, 100])  # 100 > C - 1: clamped like the miner
def test_one_rank_hard_negatives_equal_the_miner(num_negatives: int) -> None:
    weight, x, y = _data(rows=12)
    head = ShardedMarginHead(DIM, CLASSES, "arcface")
    head.load_full_weight(weight)
    classes = torch.unique(y)[:4]
    cosine = F.normalize(x) @ F.normalize(weight).T
    queries = x[last_row_of_class(y, classes)]
    for per_class in (True, False):
        ref = hard_negative_centres(cosine, y, classes, num_negatives, per_class=per_class)
        got = head.hard_negatives(queries, classes, num_negatives, per_class=per_class)
        if per_class:
            assert torch.equal(got.ids, ref) and bool(got.mask.all())
            assert torch.equal(got.centres, weight[ref])
        else:  # a fixed-size pool (no host read in the step): each class once under the mask, sorted
            assert torch.equal(got.pool_ids(), ref)
            assert torch.equal(got.centres[got.mask], weight[ref])
            assert not got.centres[~got.mask].any()
        # the replicated head mines the same centres with the same call
        replicated = create_head("arcface", DIM, CLASSES)
        with torch.no_grad():
            replicated.weight.copy_(weight)
        same = replicated.hard_negatives(queries, classes, num_negatives, per_class=per_class)
        assert torch.equal(same.ids, got.ids) and torch.equal(same.mask, got.mask)
        assert torch.equal(same.centres, got.centres)


# ---------------------------------------------------------------- memory formula == real tensors


@pytest.mark.parametrize("rate", [1.0, 0.5])
def test_memory_formula_matches_measured_tensors(rate: float) -> None:
    classes, batch = 40, 6  # batch <= the sampled quota, so S is exactly the quota
    head = ShardedMarginHead(DIM, classes, "arcface", sample_rate=rate)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9)
    out = head(torch.randn(batch, DIM), torch.randint(0, classes, (batch,)))
    out.logits.retain_grad()
    out.loss.backward()
    optimizer.step()
    expected = head_memory(classes, 1, rate, batch, embedding_size=DIM, dtype="fp32", optimizer="sgd")
    assert sum(p.nbytes for p in head.parameters()) == expected.weight
    assert sum(p.grad.nbytes for p in head.parameters()) == expected.gradient
    momentum = sum(t.nbytes for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t))
    assert momentum == expected.optimizer
    assert out.logits.nbytes + out.logits.grad.nbytes == expected.logits
    assert out.logits.shape[1] == expected.sampled_classes


def test_memory_formula_shapes() -> None:
    m = head_memory(2_000_000, 8, 0.1, 1024, embedding_size=512, dtype="fp16", optimizer="adamw")
    assert m.shard_classes == 250_000 and m.sampled_classes == 25_000
    assert m.weight == m.gradient == 250_000 * 512 * 4
    assert m.optimizer == 2 * m.weight
    assert m.logits == 2 * 1024 * 25_000 * 2
    # positives beyond the quota: the worst case keeps min(batch, C_local) centres
    assert head_memory(1000, 10, 0.01, 64).sampled_classes == 64
    with pytest.raises(ConfigError):
        head_memory(100, 1, 1.0, 8, dtype="int8")


def test_backbone_parameters_counts_the_real_model() -> None:
    from cdface.models import create_model

    assert backbone_parameters("mobilefacenet", 128) == sum(
        p.numel() for p in create_model("mobilefacenet", embedding_size=128).parameters()
    )


def test_cli_bench_memory(capsys: pytest.CaptureFixture[str]) -> None:
    code = cdface_main(
        [
            "bench",
            "memory",
            "--classes",
            "1000",
            "--world",
            "4",
            "--sample-rate",
            "0.2",
            "--batch",
            "8",
            "--embedding-size",
            "64",
        ]
    )
    text = capsys.readouterr().out
    assert code == 0
    m = head_memory(1000, 4, 0.2, 32, embedding_size=64)
    assert f"{m.weight:,}" in text and f"{m.logits:,}" in text and f"{m.total:,}" in text
    assert "250 per GPU" in text and "50 centres per step" in text
    assert cdface_main(["bench", "memory", "--classes", "10", "--sample-rate", "2"]) == 2


# ---------------------------------------------------------------- checkpoints and insightface import


def _insightface_shards(classes: int = 7, world: int = 3) -> tuple[torch.Tensor, torch.Tensor, list]:
    g = torch.Generator().manual_seed(5)
    full, momentum = torch.randn(classes, DIM, generator=g), torch.randn(classes, DIM, generator=g)
    return full, momentum, [shard_range(classes, r, world) for r in range(world)]


def test_import_insightface_partial_fc_state_dicts(tmp_path) -> None:
    full, _, ranges = _insightface_shards()
    for rank, (start, end) in enumerate(ranges):
        torch.save({"weight": full[start:end].clone()}, tmp_path / f"softmax_fc_gpu_{rank}.pt")
    state = import_insightface(tmp_path)
    assert torch.equal(state["state_dict"]["core.weight"], full)
    assert state["optimizer_state"] == {}
    head = ShardedMarginHead(DIM, 7, "arcface")
    _write_and_load(tmp_path / "head.pt", state, head)
    assert torch.equal(head.weight.detach(), full)


def _write_and_load(path, state, head, optimizer=None) -> None:
    from cdface.parallel import write_full_state

    write_full_state(path, state)
    load_sharded_head(path, head, optimizer)


def test_import_insightface_checkpoints_with_momentum(tmp_path) -> None:
    full, momentum, ranges = _insightface_shards()
    for rank, (start, end) in enumerate(ranges):
        backbone, fc = torch.nn.Linear(3, 3), torch.nn.Parameter(full[start:end].clone())
        opt = torch.optim.SGD([{"params": backbone.parameters()}, {"params": [fc]}], lr=0.1, momentum=0.9)
        opt.state[fc]["momentum_buffer"] = momentum[start:end].clone()
        opt.state[backbone.weight]["momentum_buffer"] = torch.zeros(3, 3)
        torch.save(
            {
                "epoch": 1,
                "global_step": 10,
                "state_dict_backbone": backbone.state_dict(),
                "state_dict_softmax_fc": {"weight": fc.detach()},
                "state_optimizer": opt.state_dict(),
            },
            tmp_path / f"checkpoint_gpu_{rank}.pt",
        )
    state = import_insightface(tmp_path, num_classes=7)
    assert torch.equal(state["state_dict"]["core.weight"], full)
    assert torch.equal(state["optimizer_state"]["momentum_buffer"], momentum)
    head = ShardedMarginHead(DIM, 7, "arcface")
    optimizer = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9)
    _write_and_load(tmp_path / "head.pt", state, head, optimizer)
    assert torch.equal(optimizer.state[head.weight]["momentum_buffer"], momentum)


def test_import_insightface_v1_weight_and_momentum_tensors_via_cli(tmp_path, capsys) -> None:
    full, momentum, ranges = _insightface_shards()
    for rank, (start, end) in enumerate(ranges):
        torch.save(full[start:end].clone(), tmp_path / f"rank_{rank}_softmax_weight.pt")
        torch.save(momentum[start:end].clone(), tmp_path / f"rank_{rank}_softmax_weight_mom.pt")
    out = tmp_path / "out" / "head.pt"
    assert cdface_main(["parallel", "import-insightface", str(tmp_path), str(out), "--classes", "7"]) == 0
    assert "7 x 12 centres, with momentum_buffer" in capsys.readouterr().out
    head = ShardedMarginHead(DIM, 7, "cosface")
    optimizer = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9)
    load_sharded_head(out, head, optimizer)
    assert torch.equal(head.weight.detach(), full)
    assert torch.equal(optimizer.state[head.weight]["momentum_buffer"], momentum)


def test_import_insightface_rejects_bad_layouts(tmp_path) -> None:
    full, _, ranges = _insightface_shards()
    with pytest.raises(FormatError):
        import_insightface(tmp_path)  # nothing there
    torch.save({"weight": full[:2]}, tmp_path / "softmax_fc_gpu_0.pt")
    torch.save({"weight": full[2:]}, tmp_path / "softmax_fc_gpu_2.pt")
    with pytest.raises(FormatError, match="ranks"):
        import_insightface(tmp_path)  # rank 1 missing
    torch.save({"weight": full[2:3]}, tmp_path / "softmax_fc_gpu_1.pt")
    with pytest.raises(FormatError, match="shard sizes"):
        import_insightface(tmp_path)  # 2 + 1 + 5 rows is not insightface's split of 8


class _Payload:
    def __reduce__(self):  # what a malicious pickle does: call something on load
        return (print, ("pwned",))


def test_loading_refuses_code_and_wrong_files(tmp_path) -> None:
    torch.save({"weight": _Payload()}, tmp_path / "softmax_fc_gpu_0.pt")
    with pytest.raises(UnsafeFileError):
        import_insightface(tmp_path)
    head = ShardedMarginHead(DIM, CLASSES, "arcface")
    torch.save({"weight": torch.zeros(CLASSES, DIM)}, tmp_path / "plain.pt")
    with pytest.raises(FormatError, match="sharded-head checkpoint"):
        load_sharded_head(tmp_path / "plain.pt", head)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(FormatError):
        load_sharded_head(tmp_path / "junk.pt", head)
    save_sharded_head(tmp_path / "small.pt", ShardedMarginHead(DIM, 5, "arcface"))
    with pytest.raises(FormatError, match="shape"):
        load_sharded_head(tmp_path / "small.pt", head)

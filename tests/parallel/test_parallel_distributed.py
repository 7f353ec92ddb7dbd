"""Sharded head, distributed top-k, Partial FC and resharding checkpoints on real gloo process groups.

One spawn of three gloo processes: first global ranks 1 and 2 run everything as a two-rank subgroup
(so process groups other than the default one, and group-to-global rank mapping, are exercised) and save
a checkpoint, then all three ranks run it again, resuming that checkpoint. Every rank writes its results
to a file; the tests compare them with single-process references computed here.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from cdface.heads import create_head
from cdface.losses import ClosenessDiversityLoss
from cdface.miners import hard_negative_centres, last_row_of_class
from cdface.parallel import (
    ShardedMarginHead,
    load_sharded_head,
    read_full_state,
    save_sharded_head,
    shard_range,
)

pytestmark = pytest.mark.distributed

DIM = 16
CLASSES = 11  # divisible by neither 2 nor 3
MARGINS = ("arcface", "cosface", "combined", "magface", "adaface")
BATCHES = {2: [5, 5], 3: [4, 4, 3]}  # rows per rank (world 3: unequal)
SELECTED = {2: [2, 1], 3: [1, 2, 0]}  # selected classes per rank for the top-k (world 3: one rank has none)
NUM_NEGATIVES = 4
PFC_RATE = 0.4
PFC_STEPS = 12
SUBGROUP = [1, 2]  # global ranks that form the two-rank world


def _inputs(world: int, seed: int = 0) -> dict[str, object]:
    """The same data in every process: full centres, each rank's batch and selected classes."""
    g = torch.Generator().manual_seed(seed + world)
    weight = torch.randn(CLASSES, DIM, generator=g)
    xs, ys, selected = [], [], []
    for rank, rows in enumerate(BATCHES[world]):
        xs.append(torch.randn(rows, DIM, generator=g) * 4.0)
        ys.append(torch.randint(0, CLASSES, (rows,), generator=g))
        k = SELECTED[world][rank]
        selected.append(torch.unique(ys[-1])[:k])
    return {"weight": weight, "x": xs, "y": ys, "selected": selected}


def _equality_job(rank: int, world: int, results: dict[str, object], group: object) -> None:
    data = _inputs(world)
    for name in MARGINS:
        head = ShardedMarginHead(DIM, CLASSES, name, group=group)
        head.load_full_weight(data["weight"])
        x = data["x"][rank].clone().requires_grad_()
        out = head(x, data["y"][rank])
        out.loss.backward()
        results[name] = {
            "loss": out.loss.detach(),
            "losses": out.losses.detach(),
            "target": out.target_cosine,
            "x_grad": x.grad,
            "w_grad": head.weight.grad,
            "margin_state": {k: v.clone() for k, v in head.margin.state_dict().items()},
        }


def _topk_job(rank: int, world: int, results: dict[str, object], group: object) -> None:
    data = _inputs(world)
    head = ShardedMarginHead(DIM, CLASSES, "arcface", group=group)
    head.load_full_weight(data["weight"])
    x, y, classes = data["x"][rank], data["y"][rank], data["selected"][rank]
    queries = x[last_row_of_class(y, classes)]
    per_class = head.hard_negatives(queries, classes, NUM_NEGATIVES, per_class=True)
    pool = head.hard_negatives(queries, classes, NUM_NEGATIVES, per_class=False)
    every = head.hard_negatives(queries, classes, NUM_NEGATIVES, per_class=True, all_ranks=True)
    results["topk"] = {
        "per_class": {"ids": per_class.ids, "centres": per_class.centres},
        "pool": {"ids": pool.pool_ids(), "centres": pool.centres[pool.mask], "all": pool.centres, "mask": pool.mask},
        "all_ranks": {"ids": every.ids, "centres": every.centres},
    }


def _pfc_job(rank: int, world: int, results: dict[str, object], group: object) -> None:
    data = _inputs(world)
    torch.manual_seed(100 + rank)
    head = ShardedMarginHead(DIM, CLASSES, "cosface", sample_rate=PFC_RATE, group=group)
    head.load_full_weight(data["weight"])
    optimizer = torch.optim.SGD(head.parameters(), lr=1.0, momentum=0.9)
    x, y = data["x"][rank], data["y"][rank]
    all_labels = torch.cat(data["y"])
    steps = []
    for _ in range(PFC_STEPS):
        out = head(x, y)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        steps.append({"loss": out.loss.detach(), "index": out.sampled_index, "labels": all_labels})
    results["pfc"] = {"steps": steps, "start": head.class_start, "num_local": head.num_local}


def _checkpoint_job(
    rank: int, world: int, results: dict[str, object], group: object, ckpt_in: str, ckpt_out: str
) -> None:
    data = _inputs(world)
    head = ShardedMarginHead(DIM, CLASSES, "adaface", group=group)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    if ckpt_in:
        load_sharded_head(ckpt_in, head, optimizer)
        results["resumed"] = {
            "weight": head.weight.detach().clone(),
            "momentum": optimizer.state[head.weight]["momentum_buffer"].clone(),
            "margin_state": {k: v.clone() for k, v in head.margin.state_dict().items()},
        }
    else:
        head.load_full_weight(data["weight"])
    for _ in range(2):
        out = head(data["x"][rank], data["y"][rank])
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    results["after_steps"] = {"loss": out.loss.detach(), "weight": head.weight.detach().clone()}
    if ckpt_out:
        results["saved"] = {
            "weight": head.weight.detach().clone(),
            "momentum": optimizer.state[head.weight]["momentum_buffer"].clone(),
        }
        save_sharded_head(ckpt_out, head, optimizer)


def _run_jobs(rank: int, world: int, group: object, out_dir: Path, ckpt_in: str, ckpt_out: str) -> None:
    results: dict[str, object] = {}
    _equality_job(rank, world, results, group)
    _topk_job(rank, world, results, group)
    _pfc_job(rank, world, results, group)
    _checkpoint_job(rank, world, results, group, ckpt_in, ckpt_out)
    out_dir.mkdir(exist_ok=True)
    torch.save(results, out_dir / f"rank{rank}.pt")


def _worker(global_rank: int, init_file: str, root: str, ckpt: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=global_rank,
        world_size=3,
        timeout=datetime.timedelta(seconds=120),
    )
    try:
        pair = dist.new_group(SUBGROUP)  # every rank must create it
        if global_rank in SUBGROUP:
            _run_jobs(SUBGROUP.index(global_rank), 2, pair, Path(root) / "world2", "", ckpt)
        dist.barrier()
        _run_jobs(global_rank, 3, None, Path(root) / "world3", ckpt, "")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[object, object]:
    root = tmp_path_factory.mktemp("sharded")
    ckpt = str(root / "head_world2.pt")
    mp.start_processes(_worker, args=(str(root / "init"), str(root), ckpt), nprocs=3, start_method="spawn")
    return {2: _load_results(root, 2), 3: _load_results(root, 3), "ckpt": ckpt}


def _load_results(root: Path, world: int) -> list[dict[str, object]]:
    return [torch.load(root / f"world{world}" / f"rank{r}.pt", weights_only=True) for r in range(world)]


# ---------------------------------------------------------------- sharded head == replicated head + DDP


def _replicated_reference(name: str, world: int) -> tuple[list[dict[str, torch.Tensor]], torch.Tensor]:
    """Each rank's loss, target cosine and embedding grad from a full head on its own rows; the full
    head's weight gradient averaged over ranks (what DDP would give). AdaFace: batch statistics of the
    global batch, which is what the sharded head sees (one forward on the concatenated batch)."""
    data = _inputs(world)
    head = create_head(name, DIM, CLASSES)
    with torch.no_grad():
        head.weight.copy_(data["weight"])
    xs = [x.clone().requires_grad_() for x in data["x"]]
    x_all, y_all = torch.cat(xs), torch.cat(data["y"])
    norms = x_all.norm(dim=1, keepdim=True)
    logits = head.margin(head.core(x_all), y_all, norms)  # one call: AdaFace statistics of the global batch
    per_row = F.cross_entropy(logits, y_all, reduction="none")
    target = head.core(x_all).gather(1, y_all[:, None]).squeeze(1).detach()
    out, start, total = [], 0, 0.0
    for x in xs:
        rows = slice(start, start + x.shape[0])
        loss = per_row[rows].mean()
        aux = head.margin.aux_loss(x.norm(dim=1, keepdim=True))
        if aux is not None:
            loss = loss + aux
        out.append({"loss": loss, "losses": per_row[rows], "target": target[rows]})
        total = total + loss
        start += x.shape[0]
    total.backward()
    for ref, x in zip(out, xs):
        ref["x_grad"] = x.grad
    return out, head.weight.grad / world


def _close(actual: torch.Tensor, expected: torch.Tensor, tol: float = 1e-5) -> None:
    scale = float(expected.detach().abs().max()) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected.detach(), rtol=tol, atol=tol * max(scale, 1.0))


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("name", MARGINS)
def test_sharded_head_matches_replicated_head(runs: dict, world: int, name: str) -> None:
    refs, weight_grad = _replicated_reference(name, world)
    for rank, (result, ref) in enumerate(zip(runs[world], refs)):
        got = result[name]
        _close(got["loss"], ref["loss"])
        _close(got["losses"], ref["losses"])
        _close(got["target"], ref["target"])
        _close(got["x_grad"], ref["x_grad"])
        start, end = shard_range(CLASSES, rank, world)
        assert got["w_grad"].shape == (end - start, DIM)
        _close(got["w_grad"], weight_grad[start:end])


def test_adaface_running_statistics_agree_across_ranks(runs: dict) -> None:
    states = [r["adaface"]["margin_state"] for r in runs[3]]
    assert states[0]["batch_mean"] != 20.0  # updated once, from the global batch
    for state in states[1:]:
        assert torch.equal(state["batch_mean"], states[0]["batch_mean"])
        assert torch.equal(state["batch_std"], states[0]["batch_std"])


# ---------------------------------------------------------------- distributed top-NP


@pytest.mark.parametrize("world", [2, 3])
def test_distributed_topk_equals_full_matrix_miner(runs: dict, world: int) -> None:
    data = _inputs(world)
    x_all, y_all = torch.cat(data["x"]), torch.cat(data["y"])
    classes_all = torch.cat(data["selected"])
    offsets = [0]
    for rank in range(world):  # the query of each selected class is the last row of it in its rank's batch
        offsets.append(offsets[-1] + data["x"][rank].shape[0])
    rows = torch.cat([offsets[r] + last_row_of_class(data["y"][r], data["selected"][r]) for r in range(world)])
    # the full-matrix miner on a batch made of exactly those query rows
    cosine = F.normalize(x_all[rows]) @ F.normalize(data["weight"]).T
    pool_ref = hard_negative_centres(cosine, y_all[rows], classes_all, NUM_NEGATIVES, per_class=False)
    per_class_ref = hard_negative_centres(cosine, y_all[rows], classes_all, NUM_NEGATIVES, per_class=True)
    cd = ClosenessDiversityLoss(s=64.0)
    start = 0
    for rank, result in enumerate(runs[world]):
        got = result["topk"]
        k = len(data["selected"][rank])
        assert torch.equal(got["pool"]["ids"], pool_ref)
        assert torch.equal(got["all_ranks"]["ids"], per_class_ref)
        assert torch.equal(got["all_ranks"]["centres"], data["weight"][per_class_ref])
        assert torch.equal(got["pool"]["centres"], data["weight"][pool_ref])
        assert torch.equal(got["per_class"]["ids"], per_class_ref[start : start + k])
        assert torch.equal(got["per_class"]["centres"], data["weight"][per_class_ref[start : start + k]])
        if k:
            g = torch.Generator().manual_seed(rank)
            easy, hard = torch.randn(k, 3, DIM, generator=g), torch.randn(k, 2, DIM, generator=g)
            _close(cd(easy, hard, got["pool"]["centres"]), cd(easy, hard, data["weight"][pool_ref]))
            # the step's form: the fixed-size pool with its mask gives the same loss
            _close(cd(easy, hard, got["pool"]["all"], got["pool"]["mask"]), cd(easy, hard, data["weight"][pool_ref]))
            _close(
                cd(easy, hard, got["per_class"]["centres"]),
                cd(easy, hard, data["weight"][per_class_ref[start : start + k]]),
            )
        start += k


# ---------------------------------------------------------------- Partial FC


@pytest.mark.parametrize("world", [2, 3])
def test_partial_fc_keeps_positives_and_samples_without_duplicates(runs: dict, world: int) -> None:
    for result in runs[world]:
        pfc = result["pfc"]
        start, num_local = pfc["start"], pfc["num_local"]
        quota = -(-num_local * PFC_RATE // 1)  # ceil
        for step in pfc["steps"]:
            index, labels = step["index"], step["labels"]
            assert index is not None
            assert len(set(index.tolist())) == index.numel()
            assert bool(((index >= 0) & (index < num_local)).all())
            local = labels[(labels >= start) & (labels < start + num_local)] - start
            positives = torch.unique(local)
            assert torch.equal(index[: positives.numel()], positives)  # positives first, sorted
            assert index.numel() == max(quota, positives.numel())


@pytest.mark.parametrize("world", [2, 3])
def test_partial_fc_loss_is_finite_and_decreases(runs: dict, world: int) -> None:
    losses = torch.stack([torch.stack([s["loss"] for s in r["pfc"]["steps"]]) for r in runs[world]]).mean(0)
    assert bool(torch.isfinite(losses).all())
    assert losses[-5:].mean() < 0.5 * losses[:5].mean()


# ---------------------------------------------------------------- checkpoints across world sizes


def test_save_with_two_ranks_gathers_the_full_state(runs: dict) -> None:
    state = read_full_state(runs["ckpt"])
    weight = state["state_dict"]["core.weight"]
    momentum = state["optimizer_state"]["momentum_buffer"]
    assert weight.shape == momentum.shape == (CLASSES, DIM)
    for rank, result in enumerate(runs[2]):
        start, end = shard_range(CLASSES, rank, 2)
        assert torch.equal(weight[start:end], result["saved"]["weight"])
        assert torch.equal(momentum[start:end], result["saved"]["momentum"])
    # world-size free: the replicated head loads it as is
    full_head = create_head("adaface", DIM, CLASSES)
    full_head.load_state_dict(state["state_dict"])
    assert torch.equal(full_head.weight, weight)


def test_resume_with_three_ranks(runs: dict) -> None:
    state = read_full_state(runs["ckpt"])
    weight = state["state_dict"]["core.weight"]
    momentum = state["optimizer_state"]["momentum_buffer"]
    pieces_w, pieces_m = [], []
    for rank, result in enumerate(runs[3]):
        start, end = shard_range(CLASSES, rank, 3)
        pieces_w.append(result["resumed"]["weight"])
        pieces_m.append(result["resumed"]["momentum"])
        assert torch.equal(result["resumed"]["margin_state"]["batch_mean"], state["state_dict"]["margin.batch_mean"])
        assert bool(torch.isfinite(result["after_steps"]["loss"]))
        assert not torch.equal(result["after_steps"]["weight"], weight[start:end])  # the steps moved it
    assert torch.equal(torch.cat(pieces_w), weight)
    assert torch.equal(torch.cat(pieces_m), momentum)


def test_resume_with_one_rank_continues_like_the_replicated_optimizer(runs: dict) -> None:
    state = read_full_state(runs["ckpt"])
    head = ShardedMarginHead(DIM, CLASSES, "adaface")
    optimizer = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    load_sharded_head(runs["ckpt"], head, optimizer)
    assert torch.equal(head.weight.detach(), state["state_dict"]["core.weight"])
    assert torch.equal(optimizer.state[head.weight]["momentum_buffer"], state["optimizer_state"]["momentum_buffer"])
    # a further step from the resumed momentum equals the hand-written SGD update
    data = _inputs(2)
    out = head(torch.cat(data["x"]), torch.cat(data["y"]))
    optimizer.zero_grad()
    out.loss.backward()
    grad = head.weight.grad + 5e-4 * state["state_dict"]["core.weight"]
    expected = state["state_dict"]["core.weight"] - 0.1 * (0.9 * state["optimizer_state"]["momentum_buffer"] + grad)
    optimizer.step()
    _close(head.weight.detach(), expected)

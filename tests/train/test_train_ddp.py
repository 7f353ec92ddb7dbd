"""Two gloo processes train both stages; the ranks must end with identical weights."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from cdface.config import config_from_dict

pytestmark = pytest.mark.distributed


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world: int, port: int, configs: list[dict], out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from cdface.train.trainer import fit

    try:
        for i, values in enumerate(configs):
            result = fit(config_from_dict(values))
            # Parameters must agree; BatchNorm running statistics are per rank between DDP's buffer broadcasts.
            params = {f"backbone.{k}": v for k, v in result.backbone.named_parameters()}
            params |= {f"head.{k}": v for k, v in result.head.named_parameters()}
            torch.save(
                {"params": {k: v.detach() for k, v in params.items()}, "step": result.step},
                Path(out_dir) / f"stage{i}_rank{rank}.pt",
            )
    finally:
        torch.distributed.destroy_process_group()


def _base_config(tmp_path, face_set, **extra) -> dict:
    return {
        "output_dir": str(tmp_path / "runs"),
        "batch_size": 16,
        "epochs": 1.0,
        "device": "cpu",
        "deterministic": True,
        "tensorboard": False,
        "log_every": 2,
        "dist_timeout_s": 120.0,
        "data": {"kind": "recordio", "path": str(face_set["rec"]), "num_workers": 0},
        "model": {"arch": "iresnet_tiny", "embedding_size": 32},
        "optim": {"lr": 0.05, "milestones": []},
        "cd": {"num_classes": 4, "num_easy": 3, "num_hard": 1, "num_negatives": 4, "interval": 2},
        **extra,
    }


def test_two_rank_gloo_run_of_both_stages(tiny_face_set, tmp_path):
    base = _base_config(tmp_path, tiny_face_set)
    stage1 = {**base, "name": "ddp_stage1", "method": "arcface"}
    stage2 = {**base, "name": "ddp_stage2", "method": "cd", "init_from": str(tmp_path / "runs" / "ddp_stage1")}
    mp.spawn(_worker, args=(2, _free_port(), [stage1, stage2], str(tmp_path)), nprocs=2, join=True)
    for stage in (0, 1):
        a = torch.load(tmp_path / f"stage{stage}_rank0.pt", weights_only=True)
        b = torch.load(tmp_path / f"stage{stage}_rank1.pt", weights_only=True)
        assert a["step"] == b["step"] == 6
        assert any(k.startswith("head.") for k in a["params"])
        for key in a["params"]:
            assert torch.equal(a["params"][key], b["params"][key]), f"stage {stage} {key} differs across ranks"
    # the CD stage really ran its extra loss on both ranks
    metrics = (tmp_path / "runs" / "ddp_stage2" / "metrics.jsonl").read_text()
    assert '"cd_loss": 0.0' not in metrics.splitlines()[-1]


def test_sharded_head_two_ranks_then_resume_on_one(tiny_face_set, tmp_path):
    """Partial FC head sharded over 2 gloo ranks through both stages; the checkpoint resumes on 1 process."""
    head = {"name": "cosface", "params": {"s": 64.0, "m": 0.4}, "sharded": True, "sample_rate": 0.5}
    base = _base_config(tmp_path, tiny_face_set, log_every=1, head=head)
    # clipping by the global norm: the head's shards differ per rank, the clip factor must not
    base["optim"] = {**base["optim"], "grad_clip": 0.5}
    stage1 = {**base, "name": "pfc_stage1", "method": "arcface"}
    stage2 = {**base, "name": "pfc_stage2", "method": "cd", "init_from": str(tmp_path / "runs" / "pfc_stage1")}
    mp.spawn(_worker, args=(2, _free_port(), [stage1, stage2], str(tmp_path)), nprocs=2, join=True)
    a = torch.load(tmp_path / "stage1_rank0.pt", weights_only=True)["params"]
    b = torch.load(tmp_path / "stage1_rank1.pt", weights_only=True)["params"]
    assert a["head.weight"].shape[0] + b["head.weight"].shape[0] == 12  # 12 classes split over 2 shards
    for key in (k for k in a if k.startswith("backbone.")):
        assert torch.equal(a[key], b[key]), key

    from cdface.train import checkpoint as ckpt
    from cdface.train.trainer import fit

    saved = ckpt.load_checkpoint(ckpt.latest_valid_checkpoint(tmp_path / "runs" / "pfc_stage2" / "checkpoints"))
    assert saved["head"]["core.weight"].shape == (12, 32)
    full = torch.cat([torch.load(tmp_path / f"stage1_rank{r}.pt", weights_only=True)["params"]["head.weight"]
                      for r in (0, 1)])
    assert full.shape == (12, 32)
    resumed = fit(config_from_dict({**stage2, "resume": "auto", "epochs": 2.0}))
    assert resumed.step == 12
    history = [r for r in resumed.history if "ce_loss" in r]
    assert history and all(torch.isfinite(torch.tensor(r["ce_loss"])) for r in history)


def _crash_then_resume_worker(rank: int, world: int, port: int, values: dict, crash_at: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from cdface.train.trainer import fit

    def crash(step, loss):
        if step == crash_at:
            raise KeyboardInterrupt("simulated crash of the whole job")
        return loss

    try:
        try:
            fit(config_from_dict(values), fault_hook=crash)
        except KeyboardInterrupt:
            pass
        result = fit(config_from_dict({**values, "resume": "auto"}))
        params = {k: v.detach() for k, v in result.backbone.named_parameters()}
        torch.save({"params": params, "step": result.step}, Path(out_dir) / f"resumed_rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_ddp_resume_with_workers_replays_each_ranks_own_batches(tiny_face_set, tmp_path):
    """With prefetching workers each rank has its own batches drawn ahead: a resume must replay those."""
    values = _base_config(tmp_path, tiny_face_set, name="ddp_resume", method="cd", checkpoint_every=2)
    values["data"] = {**values["data"], "num_workers": 1}
    values["cd"] = {**values["cd"], "interval": 1}
    mp.spawn(_worker, args=(2, _free_port(), [{**values, "name": "ddp_straight"}], str(tmp_path)), nprocs=2)
    mp.spawn(_crash_then_resume_worker, args=(2, _free_port(), values, 3, str(tmp_path)), nprocs=2)
    straight = torch.load(tmp_path / "stage0_rank0.pt", weights_only=True)
    for rank in (0, 1):
        resumed = torch.load(tmp_path / f"resumed_rank{rank}.pt", weights_only=True)
        assert resumed["step"] == straight["step"] == 6
        for key, value in resumed["params"].items():
            assert torch.equal(value, straight["params"][f"backbone.{key}"]), f"rank {rank}: {key}"


def _register_groupnorm_net() -> None:
    """A backbone without batch statistics (GroupNorm), registered in the worker process only: with BatchNorm,
    2 ranks normalise with 8-sample statistics where one process uses 16, and no equality is promised."""
    from torch import nn

    from cdface.models.registry import register_model

    @register_model(name="test_groupnorm_net")
    def test_groupnorm_net(embedding_size: int = 32) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.GroupNorm(2, 8), nn.PReLU(8),
            nn.Conv2d(8, 16, 3, stride=4, padding=1), nn.GroupNorm(4, 16), nn.PReLU(16),
            nn.Flatten(), nn.Linear(16 * 7 * 7, embedding_size),
        )


def _equivalence_worker(rank: int, world: int, port: int, values: dict, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    _register_groupnorm_net()
    from cdface.train import checkpoint as ckpt
    from cdface.train.trainer import fit

    try:
        result = fit(config_from_dict(values))
        if rank == 0:
            params = {f"backbone.{k}": v.detach() for k, v in result.backbone.named_parameters()}
            params |= {f"head.{k}": v.detach() for k, v in result.head.named_parameters()}
            scores = ckpt.load_checkpoint(result.checkpoint)["scores"]["scores"]
            torch.save({"params": params, "scores": scores, "step": result.step},
                       Path(out_dir) / f"world{world}.pt")
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def test_two_ranks_match_one_process_on_the_same_global_batch(tiny_face_set, tmp_path):
    """The global batch is split over the ranks and DDP averages the gradients: with a backbone without batch
    statistics, 2 ranks train what 1 process trains on the same global batch (up to the order of float sums).
    (Stage 1 only: a CD step's easy/hard samples are drawn per rank from one RNG stream, so which samples a
    class gets depends on the world size.)"""
    method = "arcface"
    base = _base_config(tmp_path, tiny_face_set, method=method, model={"arch": "test_groupnorm_net",
                                                                        "embedding_size": 32})
    for world in (1, 2):
        values = {**base, "name": f"{method}_world{world}"}
        mp.spawn(_equivalence_worker, args=(world, _free_port(), values, str(tmp_path)), nprocs=world, join=True)
    one = torch.load(tmp_path / "world1.pt", weights_only=True)
    two = torch.load(tmp_path / "world2.pt", weights_only=True)
    assert one["step"] == two["step"] == 6
    assert one["params"].keys() == two["params"].keys()
    for key in one["params"]:
        torch.testing.assert_close(two["params"][key], one["params"][key], rtol=1e-4, atol=1e-5, msg=key)
    torch.testing.assert_close(two["scores"], one["scores"], rtol=1e-4, atol=1e-5)


def test_a_replicated_run_resumes_sharded_on_two_ranks(tiny_face_set, tmp_path):
    """head.sharded false -> true on resume (applied, says the resume policy) over 2 gloo ranks: the replicated
    checkpoint's head momentum holds all C rows; each rank must take its own rows. (Before, each rank's fused SGD
    silently read the first C/2 rows, so rank 1 stepped its centres with rank 0's momentum.) A sharded head
    computes what the replicated one does, so the run ends where a replicated run ends."""
    base = _base_config(tmp_path, tiny_face_set, method="arcface", epochs=1.0)
    layout = {**base, "name": "layout"}
    resumed = {**layout, "epochs": 2.0, "resume": "auto", "head": {"sharded": True}}
    straight = {**base, "name": "straight", "epochs": 2.0}
    mp.spawn(_worker, args=(2, _free_port(), [layout, resumed, straight], str(tmp_path)), nprocs=2, join=True)
    shards = [torch.load(tmp_path / f"stage1_rank{r}.pt", weights_only=True)["params"]["head.weight"] for r in (0, 1)]
    full = torch.load(tmp_path / "stage2_rank0.pt", weights_only=True)["params"]["head.core.weight"]
    torch.testing.assert_close(torch.cat(shards), full, atol=1e-5, rtol=1e-4)

"""One builder for the training head (issue 25 item 9): the replicated and the sharded head read head.params alike."""

from __future__ import annotations

import pytest
import torch

from cdface.config import config_from_dict
from cdface.errors import ConfigError
from cdface.parallel import ShardedMarginHead
from cdface.train.head_setup import build_head


def _cfg(sharded: bool, **params):
    return config_from_dict({"device": "cpu", "model": {"embedding_size": 8},
                             "head": {"name": "arcface", "sharded": sharded, "params": params}})


def test_init_std_and_the_margin_settings_reach_the_sharded_head_as_the_replicated_one() -> None:
    """head.params.init_std was refused once head.sharded was true ("unknown ['init_std']"); on one process both
    heads now start from the same centres."""
    heads = {}
    for sharded in (False, True):
        torch.manual_seed(0)
        heads[sharded] = build_head(_cfg(sharded, s=32.0, m=0.4, init_std=0.5), 40, rank=0, local_batch=4,
                                    device=torch.device("cpu"))
    assert isinstance(heads[True], ShardedMarginHead)
    assert torch.equal(heads[True].weight, heads[False].weight)
    assert 0.4 < float(heads[True].weight.std()) < 0.6  # normal(0, 0.5), not the default 0.01
    for head in heads.values():
        assert (head.margin.s, head.margin.m) == (32.0, 0.4)


@pytest.mark.parametrize("sharded", [False, True])
def test_an_unknown_head_parameter_is_refused_by_both_heads(sharded: bool) -> None:
    with pytest.raises(ConfigError, match=r"head.params: unknown \['std'\] for arcface"):
        build_head(_cfg(sharded, std=0.5), 40, rank=0, local_batch=4, device=torch.device("cpu"))

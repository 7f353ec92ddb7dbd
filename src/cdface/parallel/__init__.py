"""Scale: a model-parallel (sharded) margin head with Partial FC sampling, distributed hard-negative
mining, world-size-free head checkpoints and a per-GPU memory model. See docs/scale.md."""

from .checkpoint import (
    gather_full_state,
    import_insightface,
    load_full_state,
    load_sharded_head,
    read_full_state,
    save_sharded_head,
    write_full_state,
)
from .cross_entropy import sharded_cross_entropy
from .memory import HeadMemory, head_memory
from .sampling import sample_centres
from .sharded_head import ShardedMarginHead
from .sharding import num_sampled, reshard, shard_range, shard_sizes

__all__ = [
    "HeadMemory",
    "ShardedMarginHead",
    "gather_full_state",
    "head_memory",
    "import_insightface",
    "load_full_state",
    "load_sharded_head",
    "num_sampled",
    "read_full_state",
    "reshard",
    "sample_centres",
    "save_sharded_head",
    "shard_range",
    "shard_sizes",
    "sharded_cross_entropy",
    "write_full_state",
]

"""`cdface ablate`: stage-2 variants x seeds from one shared stage 1, every model evaluated the same way.

One stage-1 ArcFace run (with its difficulty scores) is trained once; each variant (ArcFace continued, CD,
closeness only, diversity only, CD with another wd, per-class centres, interval or scale) is trained from
its checkpoint for every seed; then every model gets

- the insightface 10-fold pair accuracy and TAR@FAR on the synthetic `.bin` of disjoint identities;
- the mechanism metrics, which say *how* a variant changed the features, on the training set itself:
  the train-set accuracy (argmax of the model's own centres), the intra-class variance of the easy samples
  (score >= the CD split, the p-quantile of the stage-1 scores) ``1 - ||mean of unit embeddings||^2``, and
  for the hardest 5 % of samples by stage-1 score their mean cosine to their own centre and to the nearest
  wrong centre; the accuracy on the eval pairs that contain a hard image (the generator's own flag); and
  the two CD terms as logged over training.

The table gives mean +- std over seeds and each variant's paired difference to the baseline (ArcFace
continued unless ``--baseline`` names another variant; same seed) with a 95 % Student-t interval. The
quickstart is this with one seed and two variants.

The package: ``presets`` (the variants and the runs' configs), ``metrics`` (the probe and what each model is
measured on), ``report`` (statistics and tables), ``runner`` (``run_ablation``).
"""

from cdface.train.ablation.metrics import (
    HARDEST_FRACTION,
    Probe,
    build_probe,
    cd_terms,
    embed,
    evaluate_run,
    hard_pair_accuracy,
    load_backbone,
    mechanism_metrics,
    read_health,
)
from cdface.train.ablation.presets import (
    BASELINE,
    DEFAULT_VARIANTS,
    VARIANTS,
    preset_base,
    stage_configs,
    variant_config,
)
from cdface.train.ablation.report import (
    METRICS,
    format_ablation,
    mean_row,
    paired_difference,
    summarise,
    summarise_by_stage1,
    t_quantile_975,
)
from cdface.train.ablation.runner import run_ablation
from cdface.train.plots import read_history

__all__ = [
    "BASELINE", "DEFAULT_VARIANTS", "HARDEST_FRACTION", "METRICS", "VARIANTS", "Probe", "build_probe", "cd_terms",
    "embed", "evaluate_run", "format_ablation", "hard_pair_accuracy", "load_backbone", "mean_row", "mechanism_metrics",
    "paired_difference", "preset_base", "read_health", "read_history", "run_ablation", "stage_configs", "summarise",
    "summarise_by_stage1", "t_quantile_975", "variant_config",
]

"""Targets: embed a benchmark's images with a `FaceEmbedder` the way its reference prepares features, score
them with `cdface.eval`'s functions, and return a `TargetResult` (metrics, provenance, plot curves).

One module per benchmark: `pairs` (LFW-family `.bin`), `ijb` (IJB-B/C), `megaface`, `rfw`, `tinyface`.
`cdface.eval.evaluate` picks the target from its name.
"""

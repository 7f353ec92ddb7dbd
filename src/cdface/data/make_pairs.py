"""A held-out verification pair set drawn from identity folders, written in insightface's `.bin` layout.

`draw_pairs` draws a seeded, balanced set of `folds` folds, each `pairs_per_fold / 2` same-identity pairs
followed by as many different-identity pairs (the layout of LFW's `.bin` and of insightface's 10-fold
protocol, `KFold(shuffle=False)` on consecutive pairs). How a pair is drawn:

- same: an identity uniformly among those of the fold with at least two images, then two distinct images of
  it (so every identity counts about equally, however many images it has);
- different: two distinct identities of the fold uniformly, then one image of each.

No pair appears twice (either order). When the set has at least two identities per fold for every fold
(`2 * folds` identities with two images or more), identities are dealt to the folds and each fold draws only
among its own (identity-disjoint folds, as LFW's View 2: the threshold chosen on nine folds never saw the
tenth fold's people); otherwise every fold draws from all identities, and the summary says so.

`make_pair_set` reads `root/<identity>/<image>` (`ImageFolderDataset`), leaves out identities named by
`exclude` (to keep the set disjoint from a training set), draws, and writes the `.bin` with `write_bin` (the
byte layout of the field's files: `pickle.load(f, encoding='bytes')` gives `(bins, issame_list)`) and a
`<stem>.pairs.txt` listing every pair (fold, same, both paths).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cdface.errors import ConfigError, FormatError
from cdface.files import TEXT_ENCODING, atomic_write

__all__ = ["DrawnPairs", "PairSetSummary", "draw_pairs", "max_pairs", "excluded_identities", "make_pair_set"]


@dataclass(frozen=True)
class DrawnPairs:
    """`pairs` (P, 2) int64 image indices, `issame` (P,) bool, `fold` (P,) int64; `disjoint`: whether each
    identity appears in one fold only."""

    pairs: np.ndarray
    issame: np.ndarray
    fold: np.ndarray
    disjoint: bool


@dataclass
class PairSetSummary:
    """What `make_pair_set` drew and wrote (printed by `cdface data make-pairs`)."""

    out: Path
    listing: Path
    pairs: int
    same: int
    folds: int
    identities_used: int
    identities_total: int
    images_total: int
    disjoint: bool
    seed: int
    requested: int
    excluded: list[str] = field(default_factory=list)
    reencoded: int = 0
    sizes: list[tuple[int, int]] = field(default_factory=list)
    no_face: list[str] = field(default_factory=list)  # with photo crops: photos left out (no face, unreadable)


_ENUMERATE = 4_000_000  # up to this many candidate pairs a fold lists them all and samples without replacement


def _distinct_rows(rows: np.ndarray) -> np.ndarray:
    """Rows (a, b) with a != b, each unordered pair once, in first-drawn order."""
    rows = rows[rows[:, 0] != rows[:, 1]]
    key = np.minimum(rows[:, 0], rows[:, 1]) * (1 << 31) + np.maximum(rows[:, 0], rows[:, 1])
    _, first = np.unique(key, return_index=True)
    return rows[np.sort(first)]


def _within_group_pairs(counts: np.ndarray) -> np.ndarray:
    """All pairs (p, q), p < q, of positions in a sequence grouped by `counts` (consecutive groups), with p and
    q in the same group: (sum C(n, 2), 2) int64, without a loop over groups."""
    ends = np.repeat(np.cumsum(counts), counts)
    pos = np.arange(int(counts.sum()))
    partners = ends - pos - 1
    first = np.repeat(pos, partners)
    offsets = np.arange(first.size) - np.repeat(np.cumsum(partners) - partners, partners)
    return np.stack([first, first + 1 + offsets], axis=1)


def _fold_pairs(labels: np.ndarray, members: np.ndarray, n_same: int, n_diff: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`n_same` same and `n_diff` different distinct pairs (image indices) among the images `members`.

    The probability of a pair is the module docstring's (identity first, then images): where the candidates
    are few (up to `_ENUMERATE`) all are listed and sampled without replacement with those probabilities,
    else drawn in batches with duplicates dropped (there are then far more candidates than pairs asked for).
    """
    lab = labels[members]
    ids, inverse, counts = np.unique(lab, return_inverse=True, return_counts=True)
    order = members[np.argsort(inverse, kind="stable")]  # image indices grouped by identity
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    group = np.repeat(np.arange(ids.size), counts)  # identity of each position in `order`
    multi = np.flatnonzero(counts >= 2)
    same_limit = int((counts * (counts - 1) // 2).sum())
    diff_limit = int((counts.sum() ** 2 - (counts**2).sum()) // 2)
    if n_same > same_limit or n_diff > diff_limit:
        raise ConfigError(f"{same_limit} distinct same-identity and {diff_limit} different-identity pairs exist, "
                          f"{n_same} and {n_diff} asked for")

    def draw_same(n: int) -> np.ndarray:
        who = multi[rng.integers(0, multi.size, n)]
        a = rng.integers(0, counts[who])
        b = rng.integers(0, counts[who] - 1)
        b = b + (b >= a)  # a second, different image of the same identity
        return np.stack([starts[who] + a, starts[who] + b], axis=1)

    def draw_diff(n: int) -> np.ndarray:
        i = rng.integers(0, ids.size, n)
        j = rng.integers(0, ids.size - 1, n)
        j = j + (j >= i)
        return np.stack([starts[i] + rng.integers(0, counts[i]), starts[j] + rng.integers(0, counts[j])], axis=1)

    def listed_same() -> tuple[np.ndarray, np.ndarray]:
        cand = _within_group_pairs(counts)
        n = counts[group[cand[:, 0]]]
        return cand, 1.0 / (n * (n - 1))  # identity uniform among `multi`, then one of its C(n, 2) pairs

    def listed_diff() -> tuple[np.ndarray, np.ndarray]:
        a, b = np.triu_indices(int(counts.sum()), 1)
        cand = np.stack([a, b], axis=1)[group[a] != group[b]]
        return cand, 1.0 / (counts[group[cand[:, 0]]] * counts[group[cand[:, 1]]])

    def choose(count: int, limit: int, draw, listed) -> np.ndarray:
        if count == 0:
            return np.zeros((0, 2), np.int64)
        if limit <= _ENUMERATE:
            cand, weight = listed()
            return cand[rng.choice(len(cand), count, replace=False, p=weight / weight.sum())]
        if 2 * count > limit:
            raise ConfigError(f"{count} of the {limit} possible pairs of one kind: ask for at most {limit // 2}")
        got = np.zeros((0, 2), np.int64)
        while len(got) < count:  # count <= _ENUMERATE < limit: few duplicates, few rounds
            got = _distinct_rows(np.concatenate([got, draw(2 * count)]))
        return got[:count]

    same = choose(n_same, same_limit, draw_same, listed_same)
    diff = choose(n_diff, diff_limit, draw_diff, listed_diff)
    return order[same], order[diff]


def max_pairs(labels: np.ndarray, folds: int = 10, disjoint: bool = False, seed: int = 0) -> int:
    """The most pairs (a multiple of 2 x folds) `draw_pairs` can draw: per fold, as many same as different
    distinct pairs, so twice the smallest of the folds' two pair counts, times the folds."""
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    fold_of = _fold_assignment(labels, folds, np.random.default_rng(seed)) if disjoint else np.zeros_like(labels)
    best = None
    for k in range(folds if disjoint else 1):
        _, counts = np.unique(labels[fold_of == k], return_counts=True)
        same = int((counts * (counts - 1) // 2).sum())
        diff = int((counts.sum() ** 2 - (counts**2).sum()) // 2)
        best = min(same, diff) if best is None else min(best, same, diff)
    half = (best or 0) if disjoint else (best or 0) // folds  # same (and different) pairs per fold
    return 2 * half * folds


def _fold_assignment(labels: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    """Fold of each image: the identities, shuffled (those with two images or more first), dealt round-robin."""
    ids, counts = np.unique(labels, return_counts=True)
    dealt = np.r_[rng.permutation(ids[counts >= 2]), rng.permutation(ids[counts < 2])]
    rank = np.empty(ids.size, np.int64)
    rank[np.searchsorted(ids, dealt)] = np.arange(dealt.size)
    return rank[np.searchsorted(ids, labels)] % folds


def draw_pairs(labels: np.ndarray, num_pairs: int, folds: int = 10, seed: int = 0,
               disjoint: bool | None = None) -> DrawnPairs:
    """`num_pairs` pairs (a multiple of `2 * folds`) over images with identity `labels` (N,) int.

    `disjoint`: None = identity-disjoint folds when every fold can get two identities with two images or
    more, True = require it (ConfigError otherwise), False = every fold draws from all identities (a pair is
    then never drawn twice across folds either). ConfigError when the images cannot give that many distinct
    pairs (`max_pairs` says how many they can). Deterministic for a given seed.
    """
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if folds < 1 or num_pairs < 2 * folds or num_pairs % (2 * folds):
        raise ConfigError(f"the number of pairs must be a positive multiple of 2 x folds = {2 * folds} "
                          f"(each fold: as many same as different pairs), got {num_pairs}")
    ids, counts = np.unique(labels, return_counts=True)
    multi = int((counts >= 2).sum())
    if multi == 0 or ids.size < 2:
        raise ConfigError(f"pairs need two identities and one with two images or more; got {ids.size} "
                          f"identities, {multi} with two images or more")
    can_split = multi >= 2 * folds
    if disjoint and not can_split:
        raise ConfigError(f"identity-disjoint folds need {2 * folds} identities with two images or more, "
                          f"got {multi}")
    use_split = can_split if disjoint is None else bool(disjoint)
    rng = np.random.default_rng(seed)
    half = num_pairs // folds // 2
    if use_split:
        fold_of = _fold_assignment(labels, folds, np.random.default_rng(seed))
        parts = [_fold_pairs(labels, np.flatnonzero(fold_of == k), half, half, rng) for k in range(folds)]
    else:  # one draw over everyone, dealt to the folds: no pair repeats across folds
        same, diff = _fold_pairs(labels, np.arange(labels.size), half * folds, half * folds, rng)
        parts = [(same[k * half:(k + 1) * half], diff[k * half:(k + 1) * half]) for k in range(folds)]
    pairs = np.concatenate([np.concatenate(p) for p in parts])
    issame = np.tile(np.r_[np.ones(half, bool), np.zeros(half, bool)], folds)
    return DrawnPairs(pairs, issame, np.repeat(np.arange(folds), 2 * half), use_split)


def excluded_identities(source: str | Path, names: list[str], paths: list[Path], labels: np.ndarray) -> set[str]:
    """Which of the folder's identities `names` a training set holds.

    `source`: a folder (its sub-folder names are identities), a RecordIO `.rec` (identities with an image that
    is byte for byte one of its records: a .rec stores no names) or a text file of identity names, one per line.
    """
    source = Path(source)
    if source.is_dir() and not any(source.glob("*.rec")):
        return {d.name for d in source.iterdir() if d.is_dir()} & set(names)
    if source.suffix == ".rec" or source.is_dir():
        from cdface.data.datasets import resolve_recordio_paths
        from cdface.data.recordio import RecordIOReader

        rec, idx = resolve_recordio_paths(source)
        reader = RecordIOReader(rec, idx)
        try:
            digests = {hashlib.sha256(reader.read(int(key))[1]).digest() for key in reader.layout().image_keys}
        finally:
            reader.close()
        hit = np.array([hashlib.sha256(p.read_bytes()).digest() in digests for p in paths], dtype=bool)
        return {names[i] for i in np.unique(labels[hit])}
    if not source.is_file():
        raise FormatError(source, None, "a training set for --exclude-from: a folder, a .rec or a text file of "
                          "identity names (not found)")
    try:
        listed = {line.strip() for line in source.read_text(encoding=TEXT_ENCODING).lstrip("\ufeff").splitlines()}
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(source, None, f"a UTF-8 text file of identity names, one per line ({exc})") from None
    return (listed - {""}) & set(names)


def _bin_bytes(path: Path, reencoded: list[int]) -> tuple[bytes, tuple[int, int]]:
    """The file's bytes when it is a JPEG or PNG (what insightface's loader decodes), else a JPEG of it."""
    from cdface.data.decode import decode_image, encode_jpeg, is_jpeg

    data = path.read_bytes()
    image = decode_image(data, path)  # refuse undecodable or oversized files now, not at evaluation time
    if not (is_jpeg(data) or data[:8] == b"\x89PNG\r\n\x1a\n"):
        data = encode_jpeg(image, 95)
        reencoded.append(1)
    return data, (int(image.shape[0]), int(image.shape[1]))


PhotoCrops = Callable[[list[Path]], tuple[dict[int, bytes], list[str]]]


def make_pair_set(root: str | Path, out: str | Path, num_pairs: int = 6000, folds: int = 10, seed: int = 0,
                  exclude: Iterable[str | Path] = (), disjoint: bool | None = None,
                  photo_crops: PhotoCrops | None = None) -> PairSetSummary:
    """Draw pairs from `root/<identity>/<image>` and write `out` (.bin) and `<out stem>.pairs.txt`.

    `num_pairs` is lowered to the largest multiple of `2 * folds` the folder allows (distinct pairs, two
    identities per fold) when it asks for more; the summary keeps what was requested.

    `photo_crops` (the images are raw photos; `cdface.detect.pack.aligned_photo_crops`): paths -> ({image
    index: encoded aligned crop}, one line per photo left out). Only photos with a crop are drawn from, and the
    .bin holds their crops.
    """
    from cdface.data.datasets import ImageFolderDataset
    from cdface.data.pairs_bin import write_bin

    root = Path(root)
    dataset = ImageFolderDataset(root)
    names = list(dataset.class_names)
    labels = np.asarray(dataset.labels, dtype=np.int64)
    paths = list(dataset.paths)
    dropped: set[str] = set()
    for source in exclude:
        dropped |= excluded_identities(source, names, paths, labels)
    keep_ids = np.array([i for i, n in enumerate(names) if n not in dropped], dtype=np.int64)
    crops: dict[int, bytes] | None = None
    no_face: list[str] = []
    usable = np.ones(len(paths), dtype=bool)
    if photo_crops is not None:
        crops, no_face = photo_crops(paths)
        usable[:] = False
        usable[np.fromiter(crops, dtype=np.int64, count=len(crops))] = True
    keep = np.flatnonzero(np.isin(labels, keep_ids) & usable)
    kept = labels[keep]
    ids, counts = np.unique(kept, return_counts=True)
    split = bool(disjoint) if disjoint is not None else int((counts >= 2).sum()) >= 2 * folds
    n = num_pairs
    if num_pairs >= 2 * folds and num_pairs % (2 * folds) == 0:  # else draw_pairs says what is wrong
        n = min(num_pairs, max_pairs(kept, folds, split, seed))
        if n < 2 * folds:
            left_out = f" after leaving out {len(dropped)} of {len(names)} as in the training set" if dropped else ""
            raise ConfigError(f"{root}: {ids.size} identities{left_out} ({int((counts >= 2).sum())} with two "
                              f"images or more) cannot give {2 * folds} distinct pairs (a same and a different "
                              "pair per fold)")
    drawn = draw_pairs(kept, n, folds, seed, split)
    index = keep[drawn.pairs]  # (P, 2) indices into the dataset
    reencoded: list[int] = []
    sizes: set[tuple[int, int]] = set()
    cache: dict[int, bytes] = {}
    for i in np.unique(index):  # each image decoded once (the pairs reuse images)
        if crops is not None:
            cache[int(i)] = crops[int(i)]
            continue
        cache[int(i)], size = _bin_bytes(paths[int(i)], reencoded)
        sizes.add(size)
    images = [cache[int(i)] for i in index.reshape(-1)]
    out = write_bin(out, images, drawn.issame)
    listing = out.with_name(out.name.removesuffix(".bin") + ".pairs.txt")
    rel = [p.relative_to(root).as_posix() for p in paths]
    lines = ["# fold<TAB>same<TAB>image_a<TAB>image_b (relative to the folder), drawn by cdface data make-pairs\n"]
    lines += [f"{f + 1}\t{int(s)}\t{rel[a]}\t{rel[b]}\n" for f, s, (a, b) in zip(drawn.fold, drawn.issame, index)]
    atomic_write(listing, "".join(lines))
    return PairSetSummary(
        out=out, listing=listing, pairs=len(drawn.issame), same=int(drawn.issame.sum()), folds=folds,
        identities_used=int(np.unique(labels[index]).size), identities_total=len(names), images_total=len(paths),
        disjoint=drawn.disjoint, seed=seed, requested=num_pairs, excluded=sorted(dropped),
        reencoded=len(reencoded), sizes=sorted(sizes), no_face=no_face,
    )

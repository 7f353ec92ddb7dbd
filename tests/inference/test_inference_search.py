"""topk_search against a brute-force full sort, across chunk boundaries."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cdface.inference.search import topk_search


def _brute(queries: np.ndarray, gallery: np.ndarray, k: int, normalize: bool = True):
    q, g = queries.astype(np.float64), gallery.astype(np.float64)
    if normalize:
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        g = g / np.linalg.norm(g, axis=1, keepdims=True)
    sim = q @ g.T
    order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sim, order, axis=1), order


@pytest.mark.parametrize("chunk", [7, 64, 10_000])
@pytest.mark.parametrize("normalize", [True, False])
def test_matches_brute_force(chunk, normalize):
    rng = np.random.default_rng(chunk)
    gallery = rng.normal(size=(301, 24)).astype(np.float32)
    queries = rng.normal(size=(17, 24)).astype(np.float32)
    scores, indices = topk_search(
        queries, gallery, k=6, chunk_size=chunk, query_chunk=5, normalize=normalize, device="cpu"
    )
    ref_scores, ref_indices = _brute(queries, gallery, 6, normalize)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    np.testing.assert_array_equal(indices, ref_indices)  # continuous random data: no ties
    assert scores.dtype == np.float32 and indices.dtype == np.int64


def test_finds_planted_neighbours_and_small_gallery():
    rng = np.random.default_rng(1)
    gallery = rng.normal(size=(1000, 16)).astype(np.float32)
    picks = np.array([3, 999, 500])
    queries = gallery[picks] * 2.5  # scaled copies: cosine 1 with their source
    scores, indices = topk_search(queries, gallery, k=1, chunk_size=128)
    np.testing.assert_array_equal(indices[:, 0], picks)
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    scores, indices = topk_search(queries, gallery[:2], k=5)  # k larger than the gallery
    assert indices.shape == (3, 2)


def test_memmapped_gallery(tmp_path):
    rng = np.random.default_rng(2)
    gallery = rng.normal(size=(257, 8)).astype(np.float32)
    np.save(tmp_path / "g.npy", gallery)
    mapped = np.load(tmp_path / "g.npy", mmap_mode="r")
    queries = rng.normal(size=(4, 8)).astype(np.float32)
    _, got = topk_search(queries, mapped, k=3, chunk_size=50)
    _, ref = _brute(queries, gallery, 3)
    np.testing.assert_array_equal(got, ref)


def test_bad_shapes():
    with pytest.raises(ValueError):
        topk_search(np.zeros((2, 3), np.float32), np.zeros((4, 5), np.float32))


def test_nonfinite_gallery_rows_rank_last_and_search_exits_3(tmp_path, capsys):
    from cdface.cli import main

    rng = np.random.default_rng(3)
    gallery = rng.normal(size=(9, 8)).astype(np.float32)
    gallery[4] = np.nan  # torch.topk ranks NaN first: it was every query's best hit
    gallery[7, 0] = np.inf
    queries = gallery[[0, 1]]
    scores, indices = topk_search(queries, gallery, k=9, chunk_size=4, device="cpu")
    finite = np.array([i for i in range(9) if i not in (4, 7)])
    assert set(indices[:, 7:].ravel().tolist()) == {4, 7} and np.isneginf(scores[:, 7:]).all()
    assert indices[:, 0].tolist() == [0, 1] and set(indices[0, :7].tolist()) == set(finite.tolist())
    all_nan = np.full((3, 8), np.nan, np.float32)  # k hits still name real rows, never a placeholder
    assert sorted(topk_search(queries, all_nan, k=3, chunk_size=2, device="cpu")[1][0].tolist()) == [0, 1, 2]

    np.save(tmp_path / "g.npy", gallery)
    np.save(tmp_path / "q.npy", queries)
    argv = ["search", "--gallery", str(tmp_path / "g.npy"), "--query", str(tmp_path / "q.npy"), "--k", "9", "--json"]
    assert main(argv) == 3
    out, err = capsys.readouterr()
    assert "g.npy: 2 of 9 embeddings are non-finite" in err
    assert json.loads(out)[0]["results"][-1]["score"] is None  # strict JSON: no NaN/-Infinity tokens
    assert main([*argv, "--allow-nonfinite"]) == 0

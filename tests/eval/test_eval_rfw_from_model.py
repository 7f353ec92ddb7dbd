"""RFW end to end on a mock of its test layout: unaligned images + landmarks, tab-separated LFW-format pairs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from inference_helpers import MeanColor, tiny_net
from inference_mock_data import IDENTITY_COLOURS, face, loose_crop

from cdface.cli import main
from cdface.data.decode import encode_jpeg
from cdface.errors import FormatError
from cdface.eval import evaluate_model
from cdface.eval.rfw import RACES, find_rfw_test_dir, read_rfw_race
from cdface.eval.verification import evaluate_pairs


def write_rfw(root, seed=0, aligned_races=()):
    """root/test/{txts,data}: per race 4 identities x 3 images, 10 genuine + 10 impostor pairs (one per fold);
    loose crops on another identity's colour with landmarks, or 112x112 crops without for `aligned_races`."""
    rng = np.random.default_rng(seed)
    test = root / "test"
    for race in RACES:
        names = [f"m.0{race[:2].lower()}{k}" for k in range(4)]
        lmk_lines = []
        for k, name in enumerate(names):
            (test / "data" / race / name).mkdir(parents=True)
            for i in range(1, 4):
                crop = face(IDENTITY_COLOURS[k], rng)
                file = f"{name}_{i:04d}.jpg"
                if race in aligned_races:
                    image = crop
                else:
                    image, lmk = loose_crop(crop, IDENTITY_COLOURS[(k + 1) % 4], rng)
                    coords = "\t".join(f"{v:.3f}" for v in lmk.reshape(-1))
                    lmk_lines.append(f"/test/data/{race}/{name}/{file}\t0\t{coords}")
                (test / "data" / race / name / file).write_bytes(encode_jpeg(image, quality=98))
        lines = []
        for fold in range(10):  # LFW's order: each fold's genuine pairs, then its impostors
            k = fold % 4
            i, j = 1 + fold % 3, 1 + (fold + 1) % 3
            lines.append(f"{names[k]}\t{i}\t{j}")
            lines.append(f"{names[k]}\t{i}\t{names[(k + 1 + fold % 3) % 4]}\t{j}")
        (test / "txts" / race).mkdir(parents=True)
        (test / "txts" / race / f"{race}_pairs.txt").write_text("\n".join(lines) + "\n")
        if lmk_lines:
            (test / "txts" / race / f"{race}_lmk.txt").write_text("\n".join(lmk_lines) + "\n")
    return root


@pytest.fixture(scope="module")
def rfw_root(tmp_path_factory):
    return write_rfw(tmp_path_factory.mktemp("rfw"), aligned_races=("Caucasian", "Indian"))


def test_layout_reader(rfw_root, tmp_path):
    import shutil

    root = shutil.copytree(rfw_root, tmp_path / "copy")
    race = read_rfw_race(find_rfw_test_dir(root), "Asian")
    assert race.pair_rows.shape == (20, 2) and race.issame.sum() == 10
    assert race.issame.tolist()[:4] == [True, False, True, False]
    assert len(race.paths) == len(set(race.paths)) and race.landmarks.shape == (len(race.paths), 5, 2)
    assert np.isfinite(race.landmarks).all()
    (root / "test" / "data" / "Asian" / "m.0as1" / "m.0as1_0002.jpg").unlink()
    with pytest.raises(FormatError, match=r"Asian_pairs.txt.*pair \d+"):
        read_rfw_race(find_rfw_test_dir(root), "Asian")


def test_eval_rfw_known_answer_needs_alignment(rfw_root, tmp_path):
    """MeanColor separates identities only once the faces are aligned off their other-colour canvas."""
    import shutil

    root = shutil.copytree(rfw_root, tmp_path / "copy")
    res = evaluate_model(MeanColor(), "rfw", root, batch_size=8)["rfw"].metrics
    assert res["accuracy"] == {race: 1.0 for race in RACES}
    assert res["mean_accuracy"] == 1.0 and res["std_accuracy"] == 0.0 and res["ser"] is None
    # without the landmark files the canvas colour dominates and accuracy drops
    for race in RACES:
        lmk = root / "test" / "txts" / race / f"{race}_lmk.txt"
        if lmk.exists():
            lmk.unlink()
    res = evaluate_model(MeanColor(), "rfw", root, batch_size=8)["rfw"].metrics
    assert res["accuracy"]["Indian"] == 1.0 and res["accuracy"]["African"] < 1.0


def test_rfw_matches_direct_computation_and_writes_outputs(rfw_root, tmp_path, capsys):
    from cdface.data.align import align_face
    from cdface.data.decode import decode_image

    root = rfw_root
    model = tiny_net(embedding_size=8)
    got = evaluate_model(model, "rfw", root, batch_size=8)["rfw"].metrics
    test_dir = find_rfw_test_dir(root)
    for race in RACES:
        layout = read_rfw_race(test_dir, race)
        images = [decode_image(p.read_bytes()) for p in layout.paths]
        if layout.landmarks is not None:  # Caucasian, Indian: already 112x112 crops, no landmark file
            images = [align_face(image, lmk) for image, lmk in zip(images, layout.landmarks)]
        crops = np.stack(images)
        x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        with torch.no_grad():
            feats = model(x).double().numpy() + model(x.flip(3)).double().numpy()
        expected = evaluate_pairs(feats[layout.pair_rows.reshape(-1)], layout.issame)
        assert got["races"][race]["accuracy"] == expected.accuracy
        assert got["races"][race]["threshold"] == expected.threshold

    onnx = tmp_path / "colour.onnx"
    from cdface.inference.export import export_onnx

    assert export_onnx(MeanColor().eval(), onnx, dynamic_batch=True).ok
    out = tmp_path / "out"
    rc = main(["eval", "--model", str(onnx), "--targets", "rfw", "--data-root", str(root), "--out", str(out),
               "--json", "--workers", "0", "--no-progress"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["rfw"]["mean_accuracy"] == 1.0
    table = (out / "results.md").read_text()
    assert "rfw African" in table and "rfw SER" in table and "rfw std" in table
    assert (out / "accuracy_rfw.png").stat().st_size > 1000
    prov = json.loads((out / "results.json").read_text())["models"][0]["provenance"]["rfw"]
    assert prov["protocol"]["images_with_landmarks"]["Asian"] == 12
    assert "txts/Asian/Asian_pairs.txt" in prov["files"]

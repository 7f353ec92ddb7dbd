"""Tiny benchmark directories in the real layouts (.bin pairs, IJB_release, MegaFace, TinyFace), built in a tmp dir.

Each identity is a colour: its images are that colour plus texture noise, and loose crops put the face
(rotated, scaled) on a canvas painted in *another* identity's colour, with the 5 landmarks transformed
along. With the `MeanColor` model (embedding = mean normalised colour) every protocol then has a known
answer (perfect separation) only if the pipeline aligns with the landmarks: without alignment the
canvas colour dominates and identities get confused.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from cdface.data.align import ARCFACE_TEMPLATE, transform_points, warp_affine
from cdface.data.decode import encode_jpeg

# identity colours in normalised units ([-1, 1] per channel); pairwise cosines <= 1/3
IDENTITY_COLOURS = np.array(
    [[0.8, -0.8, -0.8], [-0.8, 0.8, -0.8], [-0.8, -0.8, 0.8], [0.8, 0.8, -0.8]], dtype=np.float64
)
DISTRACTOR_COLOURS = np.array(
    [[0.7, 0.7, 0.7], [-0.7, -0.7, -0.7], [-0.7, 0.7, 0.7], [0.7, -0.7, 0.7]], dtype=np.float64
)


def face(colour: np.ndarray, rng: np.random.Generator, size: int = 112) -> np.ndarray:
    """An aligned crop: a flat colour with +-20 levels of texture noise."""
    base = (np.asarray(colour) * 0.5 + 0.5) * 255.0
    noise = rng.integers(-20, 21, size=(size, size, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def loose_crop(
    crop: np.ndarray, background: np.ndarray, rng: np.random.Generator, canvas: int = 240
) -> tuple[np.ndarray, np.ndarray]:
    """Put an aligned crop on a larger canvas (rotated +-25 deg, scaled 1.2-1.6); return canvas + landmarks."""
    angle = math.radians(rng.uniform(-25, 25))
    scale = rng.uniform(1.2, 1.6)
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    centre = np.array([56.0, 56.0])
    shift = rng.uniform(canvas * 0.4, canvas * 0.6, size=2) - np.array([[c, -s], [s, c]]) @ centre
    matrix = np.array([[c, -s, shift[0]], [s, c, shift[1]]])
    warped = warp_affine(crop, matrix, (canvas, canvas))
    mask = warp_affine(np.full(crop.shape[:2], 255, np.uint8), matrix, (canvas, canvas)) > 127
    bg = np.broadcast_to(((np.asarray(background) * 0.5 + 0.5) * 255).astype(np.uint8), warped.shape)
    image = np.where(mask[..., None], warped, bg).astype(np.uint8)
    return image, transform_points(ARCFACE_TEMPLATE, matrix)


def write_pairs_bin(path: Path, num_pairs: int = 20, seed: int = 0) -> np.ndarray:
    """A .bin of `num_pairs` pairs (first half genuine, then impostors, like the field's files)."""
    from cdface.data.pairs_bin import write_bin

    rng = np.random.default_rng(seed)
    images, issame = [], []
    for i in range(num_pairs):
        same = i < num_pairs // 2
        a = i % len(IDENTITY_COLOURS)
        b = a if same else (a + 1) % len(IDENTITY_COLOURS)
        images += [encode_jpeg(face(IDENTITY_COLOURS[a], rng)), encode_jpeg(face(IDENTITY_COLOURS[b], rng))]
        issame.append(same)
    write_bin(path, images, issame)
    return np.array(issame)


def write_ijb(root: Path, dataset: str = "IJBC", seed: int = 0) -> dict[str, int]:
    """IJB_release/<dataset>: 4 subjects x 2 templates x 2 images (loose crops + 5pts + faceness)."""
    low = dataset.lower()
    rng = np.random.default_rng(seed)
    (root / "loose_crop").mkdir(parents=True)
    (root / "meta").mkdir()
    tid_mid, pts, templates = [], [], []
    k = 0
    for subject in range(1, 5):
        for t in (1, 2):
            tid = 10 * subject + t
            templates.append((tid, subject))
            for j in range(2):
                mid = 100 * subject + (1 if t == 1 else 2 + j)  # template 1: one media; template 2: two
                k += 1
                name = f"{k}.jpg"
                background = IDENTITY_COLOURS[subject % 4]  # another subject's colour
                image, lmk = loose_crop(face(IDENTITY_COLOURS[subject - 1], rng), background, rng)
                (root / "loose_crop" / name).write_bytes(encode_jpeg(image, quality=98))
                tid_mid.append(f"{name} {tid} {mid}")
                coords = " ".join(f"{v:.3f}" for v in lmk.reshape(-1))
                pts.append(f"{name} {coords} {rng.uniform(0.5, 1.0):.4f}")
    meta = root / "meta"
    (meta / f"{low}_face_tid_mid.txt").write_text("\n".join(tid_mid) + "\n")
    (meta / f"{low}_name_5pts_score.txt").write_text("\n".join(pts) + "\n")
    pairs = [f"{ta} {tb} {int(sa == sb)}" for i, (ta, sa) in enumerate(templates) for tb, sb in templates[i + 1 :]]
    (meta / f"{low}_template_pair_label.txt").write_text("\n".join(pairs) + "\n")
    g1, g2 = ("G1", "G2") if dataset == "IJBC" else ("S1", "S2")
    rows = {  # one row per image, as the real CSVs
        g1: [(10 * s + 1, s) for s in (1, 2)],
        g2: [(10 * s + 1, s) for s in (3, 4)],
    }
    for gallery, entries in rows.items():
        lines = ["TEMPLATE_ID,SUBJECT_ID,FILENAME"] + [f"{t},{s},img/{t}_{j}.jpg" for t, s in entries for j in (0, 1)]
        (meta / f"{low}_1N_gallery_{gallery}.csv").write_text("\n".join(lines) + "\n")
    probe = ["TEMPLATE_ID,SUBJECT_ID,FILENAME"] + [
        f"{10 * s + 2},{s},img/{s}_{j}.jpg" for s in range(1, 5) for j in (0, 1)
    ]
    (meta / f"{low}_1N_probe_mixed.csv").write_text("\n".join(probe) + "\n")
    return {"images": k, "templates": len(templates), "pairs": len(pairs)}


def write_megaface(root: Path, seed: int = 0) -> dict[str, int]:
    """megaface/: 3 FaceScrub identities x 3 loose crops (+5pts, one noisy image), 9 aligned distractors
    (one a noise entry that is really a FaceScrub identity)."""
    rng = np.random.default_rng(seed)
    fs_lines, pts = [], []
    names = ["Alice_A", "Bob_B", "Carol_C"]
    for i, person in enumerate(names):
        (root / "facescrub_images" / person).mkdir(parents=True)
        for j in range(3):
            rel = f"{person}/{person}_{j}.png"
            colour = IDENTITY_COLOURS[i] if (i, j) != (2, 2) else DISTRACTOR_COLOURS[0]  # (2,2): mislabelled
            image, lmk = loose_crop(face(colour, rng), IDENTITY_COLOURS[(i + 1) % 3], rng)
            from PIL import Image

            Image.fromarray(image).save(root / "facescrub_images" / rel)
            fs_lines.append(rel)
            pts.append(rel + " " + " ".join(f"{v:.3f}" for v in lmk.reshape(-1)))
    mf_lines = []
    for j in range(9):
        rel = f"{j % 3}/{j % 3}{j}/img_{j}.jpg"
        (root / "megaface_images" / Path(rel).parent).mkdir(parents=True, exist_ok=True)
        colour = DISTRACTOR_COLOURS[j % 4] if j != 8 else IDENTITY_COLOURS[0]  # 8: Alice inside MegaFace
        (root / "megaface_images" / rel).write_bytes(encode_jpeg(face(colour, rng), quality=98))
        mf_lines.append(rel)
    (root / "facescrub_lst").write_text("\n".join(fs_lines) + "\n")
    (root / "megaface_lst").write_text("\n".join(mf_lines) + "\n")
    (root / "facescrub_5pts.txt").write_text("\n".join(pts) + "\n")
    (root / "facescrub_noises.txt").write_text("# noisy facescrub images\nCarol_C_2.png\n")
    (root / "megaface_noises.txt").write_text(f"# noisy megaface images\n1\t{mf_lines[8]}\n")
    return {"probes": len(fs_lines), "distractors": len(mf_lines)}


def _small_face(colour, rng, h=20, w=16):
    base = (np.asarray(colour) * 0.5 + 0.5) * 255.0
    return np.clip(base + rng.integers(-15, 16, size=(h, w, 3)), 0, 255).astype(np.uint8)


def _cells(names):
    cells = np.empty((len(names), 1), dtype=object)
    for i, n in enumerate(names):
        cells[i, 0] = np.array([n])
    return cells


def write_tinyface(root, seed=0, aligned=False, size=(20, 16)):
    """root/tinyface/Testing_Set with probes (ids 1..4, two each), one gallery match per id, 6 distractors."""
    from scipy import io as scipy_io

    rng = np.random.default_rng(seed)
    testing = root / "tinyface" / "Testing_Set"
    images = root / "aligned_pad_0.1_pad_high" if aligned else testing
    for sub in ("Probe", "Gallery_Match", "Gallery_Distractor"):
        (images / sub).mkdir(parents=True, exist_ok=True)
    testing.mkdir(parents=True, exist_ok=True)
    probes, gallery = [], []
    for ident in range(1, 5):
        colour = IDENTITY_COLOURS[ident - 1]
        for k in range(2):
            name = f"{ident}_{k + 1}.jpg"
            (images / "Probe" / name).write_bytes(encode_jpeg(_small_face(colour, rng, *size), quality=95))
            probes.append(name)
        name = f"{ident}_{9}.jpg"
        (images / "Gallery_Match" / name).write_bytes(encode_jpeg(_small_face(colour, rng, *size), quality=95))
        gallery.append(name)
    for k in range(6):
        colour = DISTRACTOR_COLOURS[k % len(DISTRACTOR_COLOURS)]
        (images / "Gallery_Distractor" / f"{k}.jpg").write_bytes(encode_jpeg(_small_face(colour, rng, *size)))
    def ids(names):
        return np.array([[int(n.split("_")[0])] for n in names])

    scipy_io.savemat(testing / "probe_img_ID_pairs.mat", {"probe_set": _cells(probes), "probe_ids": ids(probes)})
    scipy_io.savemat(testing / "gallery_match_img_ID_pairs.mat",
                     {"gallery_set": _cells(gallery), "gallery_ids": ids(gallery)})
    return root

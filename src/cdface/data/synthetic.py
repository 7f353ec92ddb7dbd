"""A synthetic face-identity benchmark: no download, deterministic from a seed, CPU-sized.

Each identity is a vector of parametric facial traits (face shape, skin tone, hair style and colour, eye,
brow, nose and mouth geometry, beard, glasses, moles, skin texture). Each image renders one identity
under nuisance factors (in-plane rotation, yaw, scale, shift, expression, illumination gradient and colour
cast, background, blur, noise, occluding patch); a few percent are "hard" (strong nuisance). Rendering is
vectorised over a batch of images: soft-edged ellipses, capsules and curves evaluated on the pixel grid,
alpha-composited, 112x112 RGB uint8, faces placed roughly where the ArcFace template puts them.

Identity ``i`` depends on (seed, i) only and image ``k`` of an identity on (seed, i, k) only, so sets of
any size agree on their common part, and eval identities (numbered after the training ones) are disjoint.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cdface.data.decode import encode_jpeg
from cdface.data.pairs_bin import write_bin
from cdface.data.recordio_writer import write_insightface_rec
from cdface.files import atomic_write

__all__ = [
    "Identities", "build_synthetic_benchmark", "eval_hard_flags", "make_identities", "render_images", "render_jpegs",
    "render_set",
]

SIZE = 112
_RES = 56  # faces are drawn at half resolution, then upsampled (4x less work; fine detail comes from noise)
_PX_PER_UNIT = 55.0 * _RES / SIZE  # face units -> pixels; eyes ~35 px apart at 112 like the ArcFace template
_CENTER = (28.0, 29.0)
_NOISE_BANK = 8
_IDENTITY_STREAM = 0x1D
_IMAGE_STREAM = 0x1A
_PAIR_STREAM = 0x9A

_HAIR_COLORS = np.array(
    [
        [25, 20, 18],
        [60, 40, 28],
        [105, 70, 40],
        [160, 120, 70],
        [200, 170, 110],
        [140, 60, 30],
        [150, 150, 150],
    ],
    dtype=np.float32,
)
_IRIS_COLORS = np.array([[70, 45, 25], [110, 75, 40], [70, 110, 150], [80, 120, 80], [110, 110, 120]], np.float32)


@dataclass(frozen=True)
class Identities:
    """Trait arrays of a set of identities; row j belongs to global identity number ``ids[j]``."""

    ids: np.ndarray
    traits: dict[str, np.ndarray]

    def __len__(self) -> int:
        return int(self.ids.size)


def _draw_identity(rng: np.random.Generator) -> dict[str, np.ndarray]:
    u = rng.uniform
    tone = u(0.0, 1.0)
    skin = np.array([235, 200, 175]) * (1 - tone) + np.array([110, 70, 50]) * tone
    skin = skin * u(0.93, 1.07, 3)
    hair = _HAIR_COLORS[rng.integers(len(_HAIR_COLORS))] * u(0.85, 1.15, 3)
    return {
        "face_w": u(0.60, 0.78),
        "face_h": u(0.86, 1.02),
        "face_v": u(-0.02, 0.08),
        "jaw": u(0.0, 0.35),
        "skin": skin,
        "hair": hair,
        "bald": float(u() < 0.08),
        "hairline": u(-0.78, -0.45),
        "fringe": u(-0.25, 0.35),
        "part": u(-0.4, 0.4),
        "volume": u(0.05, 0.28),
        "side_len": u(-0.1, 0.9),
        "eye_v": u(-0.18, -0.06),
        "eye_sep": u(0.27, 0.37),
        "eye_w": u(0.09, 0.135),
        "eye_ratio": u(0.38, 0.62),
        "eye_tilt": u(-0.18, 0.18),
        "iris": _IRIS_COLORS[rng.integers(len(_IRIS_COLORS))] * u(0.8, 1.2, 3),
        "brow_gap": u(0.09, 0.19),
        "brow_thick": u(0.022, 0.06),
        "brow_arch": u(-0.25, 0.45),
        "brow_len": u(0.13, 0.22),
        "brow_tilt": u(-0.2, 0.2),
        "nose_v": u(0.18, 0.34),
        "nose_w": u(0.07, 0.15),
        "nose_shade": u(0.05, 0.25),
        "mouth_v": u(0.50, 0.63),
        "mouth_w": u(0.14, 0.27),
        "lip": u(0.025, 0.065),
        "lip_color": skin * np.array([0.85, 0.55, 0.55]) * u(0.85, 1.1, 3),
        "smile0": u(-0.3, 0.5),
        "beard": float(u() < 0.18) * u(0.4, 0.9),
        "mustache": float(u() < 0.2) * u(0.5, 1.0),
        "glasses": float(u() < 0.15),
        "glasses_round": float(u() < 0.5),
        "moles": np.concatenate([u(-0.5, 0.5, (3, 2)), (u(0, 1, (3, 1)) < 0.5) * u(0.012, 0.03, (3, 1))], 1),
        "texture": np.concatenate([u(4, 14, 2), u(0, 2 * np.pi, 2), [u(0.0, 0.08)]]),
    }


def make_identities(num_identities: int, seed: int = 0, first_id: int = 0) -> Identities:
    """Identities ``first_id .. first_id + num_identities - 1``; each a function of (seed, its number)."""
    ids = np.arange(first_id, first_id + num_identities, dtype=np.int64)
    rows = [_draw_identity(np.random.default_rng([seed, _IDENTITY_STREAM, int(i)])) for i in ids]
    traits = {key: np.stack([np.asarray(r[key], np.float32) for r in rows]) for key in rows[0]} if rows else {}
    return Identities(ids, traits)


# ---- nuisance ----------------------------------------------------------------------------------------------


def _draw_nuisance(rng: np.random.Generator, hard_fraction: float) -> dict[str, np.ndarray]:
    u = rng.uniform
    hard = u() < hard_fraction
    k = 2.2 if hard else 1.0
    return {
        "hard": np.float32(hard),
        "angle": rng.normal(0, 0.10 * k),
        "yaw": np.clip(rng.normal(0, 0.16 * k), -0.6, 0.6),
        "scale": np.exp(rng.normal(0, 0.06 * k)),
        "shift": rng.normal(0, 2.5 * k, 2),
        "smile": u(-0.4, 1.0),
        "open": max(0.0, u(-0.6, 0.8)) * 0.1,
        "eye_open": np.clip(u(0.55, 1.15), 0.6, 1.1) if u() > 0.05 else 0.15,
        "gaze": u(-0.3, 0.3, 2),
        "light_dir": u(0, 2 * np.pi),
        "light": u(0.0, 0.45 * k),
        "bright": np.exp(rng.normal(0, 0.12 * k)),
        "cast": np.exp(rng.normal(0, 0.05 * k, 3)),
        "bg": u(20, 235, 3),
        "bg_grad": u(-60, 60, 2),
        "blur": u(0.0, 1.1) * k,
        "noise": u(1.5, 6.0) * k,
        "skin_var": np.exp(rng.normal(0, 0.04, 3)),
        "occlude": np.float32(u() < (0.55 if hard else 0.07)),
        "occ_box": u(0, 1, 4),
        "occ_color": u(0, 255, 3),
        "noise_pick": rng.integers(0, _NOISE_BANK),
        "noise_roll": rng.integers(0, SIZE, 2),
    }


# ---- rasterisation helpers: all (B, H, W) float32, parameters broadcast as (B, 1, 1) -----------------------


def _col(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, np.float32).reshape(-1, 1, 1)


def _ramp(signed_distance_units: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage from a signed distance (face units, positive inside), ~1 px wide edge."""
    return np.clip(0.5 + signed_distance_units * _PX_PER_UNIT, 0.0, 1.0)


def _ellipse(u, v, cu, cv, au, av):
    """Coverage of an axis-aligned ellipse; signed distance ~ (1 - d) / |grad d| (exact near the edge)."""
    x = (u - cu) / au
    y = (v - cv) / av
    d = np.sqrt(x * x + y * y)
    grad = np.sqrt((x / au) ** 2 + (y / av) ** 2) + 1e-6  # |grad d| * d
    return _ramp((1.0 - d) * d / grad)


def _curve(u, v, cu, cv, half_len, bend, tilt, half_thick):
    """Stroke along ``v = cv + tilt*a + bend*(a^2/half_len - half_len)``, |a| <= half_len."""
    a = u - cu
    t = np.clip(a, -half_len, half_len)
    centre = cv + tilt * t + bend * (t * t / half_len - half_len)
    dist = np.sqrt((a - t) ** 2 + (v - centre) ** 2)
    return _ramp(half_thick - dist)


def _blend(canvas: np.ndarray, alpha: np.ndarray, color: np.ndarray) -> None:
    """In place: canvas (3, B, H, W) <- canvas + alpha * (color - canvas), colour (B, 3)."""
    alpha = np.asarray(alpha, np.float32)
    color = np.asarray(color, np.float32).reshape(-1, 3)
    tmp = np.empty_like(canvas[0])
    for ch in range(3):
        np.subtract(color[:, ch].reshape(-1, 1, 1), canvas[ch], out=tmp)
        tmp *= alpha
        canvas[ch] += tmp


def _render_batch(t: dict[str, np.ndarray], n: dict[str, np.ndarray]) -> np.ndarray:
    """Render B faces: ``t`` identity traits and ``n`` nuisance, each stacked with a leading B axis."""
    b = len(n["angle"])
    ys, xs = np.mgrid[0:_RES, 0:_RES].astype(np.float32) + np.float32(0.5 - 0.5 * _RES / SIZE)
    half = _RES / 2
    dx = xs[None] - (_CENTER[0] + _col(n["shift"][:, 0]) * (_RES / SIZE))
    dy = ys[None] - (_CENTER[1] + _col(n["shift"][:, 1]) * (_RES / SIZE))
    cos, sin, unit = _col(np.cos(n["angle"])), _col(np.sin(n["angle"])), _col(n["scale"]) * _PX_PER_UNIT
    u = (cos * dx + sin * dy) / unit
    v = (-sin * dx + cos * dy) / unit
    yaw = _col(n["yaw"])
    c = {k: _col(val) for k, val in t.items() if val.ndim == 1}

    canvas = np.empty((3, b, _RES, _RES), np.float32)
    gradient = (xs - half) / half * _col(n["bg_grad"][:, 0]) + (ys - half) / half * _col(n["bg_grad"][:, 1])
    for ch in range(3):
        canvas[ch] = _col(n["bg"][:, ch]) + gradient

    # face outline: an ellipse narrowing towards the chin; yaw squeezes it and shifts it slightly
    face_u = u + 0.08 * yaw
    width = c["face_w"] * (1 - 0.25 * np.abs(yaw)) * (1 - c["jaw"] * np.clip(v - c["face_v"], 0, None))
    face = _ellipse(face_u, v, 0.0, c["face_v"], width, c["face_h"])
    hair = t["hair"]
    not_bald = _col(1 - t["bald"])
    # hair behind the face: a cap above it plus optional long sides
    cap = _ellipse(face_u, v, 0.0, c["face_v"] - c["volume"], c["face_w"] * 1.08 + 0.04, c["face_h"] + 0.02)
    cap *= v < c["hairline"] + 0.35
    sides = _ramp(np.minimum(c["face_w"] * 1.15 + 0.05 - np.abs(face_u), c["side_len"] - v)) * (v > -0.3)
    _blend(canvas, np.maximum(cap, sides) * not_bald, hair)

    d_face = np.sqrt((face_u / width) ** 2 + ((v - c["face_v"]) / c["face_h"]) ** 2)
    skin = t["skin"] * n["skin_var"]
    texture = t["texture"]
    pattern = np.sin(_col(texture[:, 0]) * u + _col(texture[:, 2])) * np.sin(
        _col(texture[:, 1]) * v + _col(texture[:, 3])
    )
    shade = (0.80 + 0.2 * np.clip(1 - d_face**2, 0, 1)) * (1 + _col(texture[:, 4]) * pattern)
    for ch in range(3):
        canvas[ch] += face * (_col(skin[:, ch]) * shade - canvas[ch])

    # beard / mustache (under the mouth layer)
    mouth_u = yaw * 0.55
    mouth_v = c["mouth_v"]
    beard = face * _ramp(v - (mouth_v - 0.06)) * _col(t["beard"])
    _blend(canvas, beard, hair * 0.9)
    must = _curve(u, v, mouth_u, mouth_v - c["lip"] - 0.035, c["mouth_w"] * 0.55, -0.05, 0.0, 0.022)
    _blend(canvas, must * _col(t["mustache"]), hair * 0.85)

    # hair in front: the forehead above a curved hairline with a side part
    hairline = c["hairline"] + c["fringe"] * (u - c["part"] * 0.3) ** 2 - 0.08 * np.tanh(6 * (u - c["part"]))
    _blend(canvas, face * _ramp(hairline - v) * not_bald, hair)

    # eyes, brows, glasses
    eye_open = _col(n["eye_open"])
    for side in (-1.0, 1.0):
        eu = side * c["eye_sep"] + yaw * 0.45
        ev = c["eye_v"] + side * 0.0
        ew = c["eye_w"] * (1 - 0.3 * np.abs(yaw) * (side * yaw > 0))
        eh = c["eye_w"] * c["eye_ratio"] * eye_open
        tilt_v = v - side * c["eye_tilt"] * (u - eu)
        _blend(canvas, _ellipse(u, tilt_v, eu, ev, ew + 0.018, eh + 0.018), skin * 0.55)
        sclera = _ellipse(u, tilt_v, eu, ev, ew, eh)
        _blend(canvas, sclera, np.full((b, 3), 235.0, np.float32))
        iu = eu + _col(n["gaze"][:, 0]) * ew * 0.4
        iris = sclera * _ellipse(u, v, iu, ev, ew * 0.5, ew * 0.5)
        _blend(canvas, iris, t["iris"])
        _blend(canvas, sclera * _ellipse(u, v, iu, ev, ew * 0.22, ew * 0.22), np.full((b, 3), 15.0, np.float32))
        brow = _curve(
            u,
            v,
            eu,
            ev - c["brow_gap"],
            c["brow_len"] * 0.5 * (1 - 0.3 * np.abs(yaw)),
            -c["brow_arch"] * 0.12,
            side * c["brow_tilt"] * 0.4,
            c["brow_thick"] * 0.5,
        )
        _blend(canvas, brow * not_bald.clip(0.6, 1.0), hair * 0.8)
        frame_w, frame_h = ew + 0.06, eh / eye_open + 0.05 + 0.03 * (1 - c["glasses_round"])
        ring = _ellipse(u, v, eu, ev, frame_w + 0.015, frame_h + 0.015) - _ellipse(u, v, eu, ev, frame_w, frame_h)
        _blend(canvas, np.clip(ring, 0, 1) * c["glasses"], np.full((b, 3), 30.0, np.float32))
    bridge = _curve(u, v, yaw * 0.45, c["eye_v"] - 0.02, c["eye_sep"] - c["eye_w"] - 0.06, 0.0, 0.0, 0.012)
    _blend(canvas, bridge * c["glasses"], np.full((b, 3), 30.0, np.float32))

    # nose: a shaded ridge and two nostrils, shifted most by yaw (it sticks out furthest)
    nu = yaw * 0.75
    ridge = _ramp(np.minimum(0.03 - np.abs(u - nu - 0.03), np.minimum(v - c["eye_v"], c["nose_v"] - v)))
    _blend(canvas, ridge * c["nose_shade"], skin * 0.5)
    for side in (-1.0, 1.0):
        nostril = _ellipse(u, v, nu + side * c["nose_w"] * 0.45, c["nose_v"], c["nose_w"] * 0.28, 0.028)
        _blend(canvas, nostril * 0.75, skin * 0.35)

    # mouth: lips curved by the smile, dark opening when the mouth is open
    smile = (_col(n["smile"]) + c["smile0"]) * 0.06
    open_ = _col(n["open"])
    mw = c["mouth_w"] * (1 - 0.2 * np.abs(yaw))
    curved_v = v + smile * (1 - ((u - mouth_u) / mw) ** 2)
    lips = _ellipse(u, curved_v, mouth_u, mouth_v, mw, c["lip"] + open_)
    _blend(canvas, lips, t["lip_color"])
    _blend(canvas, _ellipse(u, curved_v, mouth_u, mouth_v, mw * 0.8, open_ + 0.004), np.full((b, 3), 40.0))

    # moles
    moles = t["moles"]
    for m in range(moles.shape[1]):
        r = _col(moles[:, m, 2]) + 1e-6
        _blend(
            canvas,
            face * _ellipse(u, v, _col(moles[:, m, 0]) * 0.6, _col(moles[:, m, 1]) * 0.6 + 0.2, r, r) * (r > 1e-3),
            skin * 0.45,
        )

    # illumination: a directional gradient, global brightness and a colour cast
    light = (
        1
        + _col(n["light"])
        * (np.cos(_col(n["light_dir"])) * (xs - half) + np.sin(_col(n["light_dir"])) * (ys - half))
        / half
    )
    light *= _col(n["bright"])
    for ch in range(3):
        canvas[ch] *= light * _col(n["cast"][:, ch])

    # occluding patch (hand, mask, scarf...)
    box = n["occ_box"] * (_RES / SIZE)
    x0, y0 = _col(box[:, 0] * 80), _col(10 + box[:, 1] * 70)
    w, h = _col(12 + box[:, 2] * 40), _col(10 + box[:, 3] * 35)
    patch = ((xs >= x0) & (xs < x0 + w) & (ys >= y0) & (ys < y0 + h)) * _col(n["occlude"])
    _blend(canvas, patch.astype(np.float32), n["occ_color"])

    canvas = _gaussian_blur(canvas, n["blur"] * (_RES / SIZE))
    full = F.interpolate(torch.from_numpy(canvas), size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    full = full.numpy()
    full += _noise(n) * n["noise"].reshape(1, b, 1, 1)
    return np.clip(np.rint(full), 0, 255).astype(np.uint8).transpose(1, 2, 3, 0)


@functools.lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    """Fixed unit-variance noise fields (read-only, tiled 2x2); each image crops one at its own offset."""
    bank = np.random.default_rng([_IMAGE_STREAM, 0]).standard_normal((_NOISE_BANK, 3, SIZE, SIZE), np.float32)
    bank = np.tile(bank, (1, 1, 2, 2))
    bank.setflags(write=False)
    return bank


def _noise(n: dict[str, np.ndarray]) -> np.ndarray:
    bank = _noise_bank()
    picks = n["noise_pick"].astype(np.int64)
    rolls = n["noise_roll"].astype(np.int64)
    out = np.empty((3, picks.size, SIZE, SIZE), np.float32)
    for i, (p, (r, c)) in enumerate(zip(picks, rolls)):  # one slice copy per image
        out[:, i] = bank[p, :, r : r + SIZE, c : c + SIZE]
    return out


def _gaussian_blur(images: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """Per-image Gaussian blur of (3, B, H, W): separable, as weighted sums of shifted copies."""
    sigmas = np.asarray(sigmas, np.float32)
    radius = int(np.clip(np.ceil(2.5 * sigmas.max(initial=0.0)), 0, 4))
    if radius == 0:
        return images
    offsets = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-0.5 * (offsets[None] / np.maximum(sigmas, 0.05)[:, None]) ** 2)
    kernel /= kernel.sum(axis=1, keepdims=True)  # (B, K)
    h, w = images.shape[2:]
    padded = np.pad(images, ((0, 0), (0, 0), (radius, radius), (radius, radius)), mode="edge")
    rows = sum(kernel[:, k].reshape(1, -1, 1, 1) * padded[:, :, k : k + h, :] for k in range(2 * radius + 1))
    return sum(kernel[:, k].reshape(1, -1, 1, 1) * rows[:, :, :, k : k + w] for k in range(2 * radius + 1))


def _nuisance_draws(ids: np.ndarray, image_keys: np.ndarray, seed: int, hard_fraction: float) -> list[dict]:
    """The nuisance of image ``image_keys[i]`` of global identity ``ids[i]``: depends on (seed, id, key) only."""
    return [
        _draw_nuisance(np.random.default_rng([seed, _IMAGE_STREAM, int(i), int(k)]), hard_fraction)
        for i, k in zip(ids, image_keys)
    ]


# ---- public rendering API ----------------------------------------------------------------------------------


def render_images(
    identities: Identities,
    rows: np.ndarray,
    image_keys: np.ndarray,
    seed: int = 0,
    hard_fraction: float = 0.05,
    batch_size: int = 64,
) -> np.ndarray:
    """Render image ``image_keys[i]`` of identity row ``rows[i]``: uint8 (N, 112, 112, 3)."""
    rows = np.asarray(rows, np.int64)
    image_keys = np.asarray(image_keys, np.int64)
    out = np.empty((rows.size, SIZE, SIZE, 3), np.uint8)
    with torch.inference_mode():
        for start in range(0, rows.size, batch_size):
            sel = slice(start, start + batch_size)
            draws = _nuisance_draws(identities.ids[rows[sel]], image_keys[sel], seed, hard_fraction)
            nuisance = {key: np.stack([np.asarray(d[key], np.float32) for d in draws]) for key in draws[0]}
            traits = {key: val[rows[sel]] for key, val in identities.traits.items()}
            out[sel] = _render_batch(traits, nuisance)
    return out


def render_set(
    identities: Identities, images_per_identity: int, seed: int = 0, hard_fraction: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """``images_per_identity`` images of every identity: (uint8 (N,112,112,3), labels 0..len-1 int64)."""
    rows = np.repeat(np.arange(len(identities)), images_per_identity)
    keys = np.tile(np.arange(images_per_identity), len(identities))
    return render_images(identities, rows, keys, seed, hard_fraction), rows.astype(np.int64)


_RENDER_BATCH = 64


def _render_chunk(args: tuple) -> list[bytes]:
    identities, rows, keys, seed, hard_fraction, quality = args
    images = render_images(identities, rows, keys, seed, hard_fraction, batch_size=_RENDER_BATCH)
    return [encode_jpeg(im, quality) for im in images]


def render_jpegs(
    identities: Identities,
    rows: np.ndarray,
    image_keys: np.ndarray,
    seed: int = 0,
    hard_fraction: float = 0.05,
    quality: int = 92,
    workers: int = 0,
) -> list[bytes]:
    """``render_images`` encoded as JPEG, in ``workers`` processes when > 1.

    Chunks are whole render batches, so every image is rendered in the same batch as in a serial run and
    the bytes do not depend on ``workers`` (the blur of a batch depends on its members).
    """
    rows, image_keys = np.asarray(rows, np.int64), np.asarray(image_keys, np.int64)
    if workers <= 1 or rows.size <= _RENDER_BATCH:
        return _render_chunk((identities, rows, image_keys, seed, hard_fraction, quality))
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    per_chunk = _RENDER_BATCH * max(1, -(-rows.size // (_RENDER_BATCH * workers * 4)))
    chunks = [
        (identities, rows[i : i + per_chunk], image_keys[i : i + per_chunk], seed, hard_fraction, quality)
        for i in range(0, rows.size, per_chunk)
    ]
    # fork, as DataLoader workers do on Linux: the children render with one thread each
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        return [jpeg for chunk in pool.map(_render_chunk, chunks) for jpeg in chunk]


def _pair_plan(num_eval_ids: int, num_pairs: int, seed: int, folds: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """LFW-like plan: each fold half same-identity then half different-identity pairs."""
    if num_pairs % (2 * folds):
        raise ValueError(f"num_pairs must be a multiple of {2 * folds} (10 folds, half same / half different)")
    rng = np.random.default_rng([seed, _PAIR_STREAM])
    per_half = num_pairs // (2 * folds)
    rows, issame = [], []
    for _ in range(folds):
        same = rng.integers(0, num_eval_ids, per_half)
        first = rng.integers(0, num_eval_ids, per_half)
        second = (first + rng.integers(1, num_eval_ids, per_half)) % num_eval_ids
        rows += [np.stack([same, same], 1), np.stack([first, second], 1)]
        issame += [np.ones(per_half, bool), np.zeros(per_half, bool)]
    return np.concatenate(rows).reshape(-1), np.concatenate(issame)


def eval_hard_flags(manifest_path: str | os.PathLike) -> np.ndarray:
    """Which images of a built set's ``eval.bin`` were drawn "hard" (strong nuisance): bool (2 * pairs,).

    Replays the nuisance draws of ``build_synthetic_benchmark`` from its manifest (seed, hard fraction, eval
    identities, pair count) without rendering anything; image ``2i`` and ``2i + 1`` form pair ``i``.
    """
    manifest = json.loads(Path(manifest_path).read_text())
    first, end = manifest["eval_identities"]
    seed, hard_fraction = int(manifest["seed"]), float(manifest["hard_fraction"])
    rows, _ = _pair_plan(end - first, int(manifest["pairs"]), seed)
    draws = _nuisance_draws(first + rows, np.arange(rows.size), seed, hard_fraction)
    return np.array([bool(d["hard"]) for d in draws])


def build_synthetic_benchmark(
    out_dir: str | os.PathLike,
    num_train_ids: int = 200,
    images_per_id: int = 12,
    num_eval_ids: int = 100,
    num_pairs: int = 600,
    seed: int = 0,
    hard_fraction: float = 0.05,
    quality: int = 92,
    workers: int = 0,
) -> dict[str, Path]:
    """Write train.rec/train.idx/property (insightface layout) and eval.bin with disjoint identities.

    ``workers`` > 1 renders in that many processes (the files are byte-identical to a serial build).

    Returns the paths: ``rec``, ``idx``, ``property``, ``bin``, ``manifest``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_ids = make_identities(num_train_ids, seed, first_id=0)
    rows = np.repeat(np.arange(num_train_ids), images_per_id)
    keys = np.tile(np.arange(images_per_id), num_train_ids)
    jpegs = render_jpegs(train_ids, rows, keys, seed, hard_fraction, quality, workers)
    paths = write_insightface_rec(out, rows, jpegs)
    eval_ids = make_identities(num_eval_ids, seed, first_id=num_train_ids)
    rows, issame = _pair_plan(num_eval_ids, num_pairs, seed)
    keys = np.arange(rows.size)  # every eval image is a fresh draw of its identity
    eval_jpegs = render_jpegs(eval_ids, rows, keys, seed, hard_fraction, quality, workers)
    paths["bin"] = write_bin(out / "eval.bin", eval_jpegs, issame)
    manifest = {
        "generator": "cdface.data.synthetic",
        "seed": seed,
        "hard_fraction": hard_fraction,
        "train_identities": [int(train_ids.ids[0]), int(train_ids.ids[-1]) + 1] if num_train_ids else [0, 0],
        "eval_identities": [int(eval_ids.ids[0]), int(eval_ids.ids[-1]) + 1] if num_eval_ids else [0, 0],
        "train_images": int(num_train_ids * images_per_id),
        "classes": num_train_ids,
        "pairs": int(issame.size),
    }
    paths["manifest"] = out / "manifest.json"
    atomic_write(paths["manifest"], json.dumps(manifest, indent=1) + "\n")
    return paths

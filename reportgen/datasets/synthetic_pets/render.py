"""Procedural pets: the pictures behind the ``synthetic_pets`` data set.

Each example is drawn from its own seeded generator, so example ``i`` of a
split is the same picture on every machine. A picture is a textured
background (floor, wall, grass, brick, gravel, fabric) with clutter that is
not a pet, one cat or dog built from parts whose shape, colour and fur come
from its breed, then lighting, blur and sensor noise. The trimap follows the
Oxford-IIIT Pet convention: 1 pet, 2 background, 3 a border band along the
outline.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

PET, BACKGROUND, BORDER = 1, 2, 3

CAT_BREEDS = (
    "Abyssinian", "Bengal", "Birman", "Bombay", "British_Shorthair", "Egyptian_Mau",
    "Maine_Coon", "Persian", "Ragdoll", "Russian_Blue", "Siamese", "Sphynx",
)
DOG_BREEDS = (
    "american_bulldog", "american_pit_bull_terrier", "basset_hound", "beagle", "boxer",
    "chihuahua", "english_cocker_spaniel", "english_setter", "german_shorthaired",
    "great_pyrenees", "havanese", "japanese_chin", "keeshond", "leonberger",
    "miniature_pinscher", "newfoundland", "pomeranian", "pug", "saint_bernard",
    "samoyed", "scottish_terrier", "shiba_inu", "staffordshire_bull_terrier",
    "wheaten_terrier", "yorkshire_terrier",
)
BREEDS = tuple(sorted(CAT_BREEDS + DOG_BREEDS, key=str.lower))  # Oxford's label order

FUR_PALETTE = np.array([
    [40, 32, 28], [92, 64, 42], [150, 105, 60], [196, 150, 96], [225, 200, 160],
    [240, 236, 226], [120, 118, 122], [170, 90, 40], [70, 70, 78], [210, 170, 120],
], dtype=np.float32)


@dataclass(frozen=True)
class Breed:
    """Shape and coat of one breed; every pet of the breed varies around these."""

    name: str
    is_cat: bool
    body_aspect: float  # body length / body height
    leg_length: float  # relative to body height
    head_scale: float  # head radius / body height
    snout: float  # snout length relative to head radius
    ear_size: float
    floppy_ears: bool
    tail_length: float
    tail_width: float
    fluffiness: float  # 0 smooth outline .. 1 ragged long fur
    pattern: str  # solid, tabby, spots, bicolor, points
    base_color: tuple[float, float, float]
    second_color: tuple[float, float, float]
    fur_scale: float  # wavelength of the fur texture in pixels at 256 px


@functools.cache
def breeds() -> tuple[Breed, ...]:
    """The 37 breeds, derived deterministically from their names."""
    out = []
    for index, name in enumerate(BREEDS):
        rng = np.random.default_rng([7, index])
        is_cat = name in CAT_BREEDS
        patterns = ("solid", "tabby", "spots", "bicolor", "points") if is_cat else (
            "solid", "bicolor", "spots", "solid", "bicolor")
        colors = rng.choice(len(FUR_PALETTE), size=2, replace=False)
        out.append(Breed(
            name=name,
            is_cat=is_cat,
            body_aspect=float(rng.uniform(1.3, 1.8) if is_cat else rng.uniform(1.2, 2.1)),
            leg_length=float(rng.uniform(0.35, 0.6) if is_cat else rng.uniform(0.3, 0.95)),
            head_scale=float(rng.uniform(0.42, 0.55) if is_cat else rng.uniform(0.38, 0.6)),
            snout=float(rng.uniform(0.1, 0.25) if is_cat else rng.uniform(0.2, 0.8)),
            ear_size=float(rng.uniform(0.45, 0.7) if is_cat else rng.uniform(0.35, 0.8)),
            floppy_ears=bool(not is_cat and rng.uniform() < 0.55),
            tail_length=float(rng.uniform(0.8, 1.3) if is_cat else rng.uniform(0.2, 1.0)),
            tail_width=float(rng.uniform(0.08, 0.14) if is_cat else rng.uniform(0.08, 0.2)),
            fluffiness=float(rng.uniform(0.0, 1.0) ** 2),
            pattern=patterns[int(rng.integers(len(patterns)))],
            base_color=tuple(float(c) for c in FUR_PALETTE[colors[0]]),
            second_color=tuple(float(c) for c in FUR_PALETTE[colors[1]]),
            fur_scale=float(rng.uniform(2.0, 6.0)),
        ))
    return tuple(out)


@dataclass(frozen=True)
class Example:
    """One rendered picture with its labels, as the TFDS builder stores them."""

    image: np.ndarray  # uint8 H x W x 3
    trimap: np.ndarray  # uint8 H x W, values 1..3
    label: int  # index into BREEDS
    is_cat: bool
    head_box: tuple[float, float, float, float]  # ymin, xmin, ymax, xmax in 0..1


def _smooth_noise(rng, shape, scale, anisotropy=1.0):
    """Gaussian-filtered white noise with unit std; `scale` is the blur sigma in pixels."""
    noise = rng.standard_normal(shape).astype(np.float32)
    sigma = (max(scale, 0.3), max(scale * anisotropy, 0.3))
    noise = ndimage.gaussian_filter(noise, sigma, mode="wrap")
    return noise / (noise.std() + 1e-6)


@functools.cache
def _photo_textures():
    """Real CC0 textures shipped with scikit-image, as float grayscale in 0..1."""
    from skimage import data

    return tuple(np.asarray(t(), dtype=np.float32) / 255.0 for t in (data.grass, data.brick, data.gravel))


def _background(rng, h, w):
    kind = rng.choice(["floor", "wall", "photo", "fabric", "carpet", "room"])
    tint = rng.uniform(60, 220, size=3).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "photo":
        texture = _photo_textures()[int(rng.integers(3))]
        zoom = rng.uniform(0.4, 1.0)
        th, tw = int(min(texture.shape[0], h / zoom)), int(min(texture.shape[1], w / zoom))
        y0 = int(rng.integers(0, texture.shape[0] - th + 1))
        x0 = int(rng.integers(0, texture.shape[1] - tw + 1))
        crop = Image.fromarray((texture[y0:y0 + th, x0:x0 + tw] * 255).astype(np.uint8)).resize((w, h))
        shade = np.asarray(crop, dtype=np.float32)[..., None] / 255.0
        return shade * tint * 1.6
    if kind == "floor":
        plank = rng.uniform(18, 60)
        angle = rng.uniform(-0.4, 0.4)
        u = xx * np.cos(angle) + yy * np.sin(angle)
        v = -xx * np.sin(angle) + yy * np.cos(angle)
        board = np.floor(v / plank)
        grain = np.sin(u / rng.uniform(3, 9) + 3 * _smooth_noise(rng, (h, w), 6, 0.2) + board * 1.7)
        seams = (np.abs((v / plank) - np.round(v / plank)) < 0.04).astype(np.float32)
        shade = 0.75 + 0.12 * grain + 0.1 * np.sin(board * 12.9898) - 0.35 * seams
        return shade[..., None] * tint
    if kind == "fabric":
        period_a, period_b = rng.uniform(6, 30, size=2)
        weave = np.sin(xx / period_a * 2 * np.pi) * np.sin(yy / period_b * 2 * np.pi)
        stripes = (np.sin(xx / (period_a * 3)) > 0.6) | (np.sin(yy / (period_b * 3)) > 0.6)
        second = rng.uniform(60, 220, size=3).astype(np.float32)
        base = np.where(stripes[..., None], second, tint)
        return base * (0.85 + 0.12 * weave[..., None])
    if kind == "carpet":
        shade = 0.8 + 0.15 * _smooth_noise(rng, (h, w), 1.0) + 0.1 * _smooth_noise(rng, (h, w), 12)
        return shade[..., None] * tint
    gradient = 0.7 + 0.3 * (yy / h if rng.uniform() < 0.5 else xx / w)
    wall = (gradient + 0.04 * _smooth_noise(rng, (h, w), 20))[..., None] * tint
    if kind == "wall":
        return wall
    horizon = int(h * rng.uniform(0.35, 0.7))  # "room": wall above a floor
    floor_tint = rng.uniform(50, 200, size=3).astype(np.float32)
    floor = (0.8 + 0.1 * _smooth_noise(rng, (h, w), 3, 4.0))[..., None] * floor_tint
    wall[horizon:] = floor[horizon:]
    return wall


def _draw_clutter(rng, image, h, w):
    """Objects that are not pets: boxes, balls, sticks and cushions, shaded a little."""
    for _ in range(int(rng.integers(0, 5))):
        layer = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(layer)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        size = rng.uniform(0.05, 0.25) * min(h, w)
        shape = rng.choice(["box", "ball", "stick", "ring"])
        if shape == "box":
            draw.rectangle([cx - size, cy - size * 0.6, cx + size, cy + size * 0.6], fill=255)
        elif shape == "ball":
            draw.ellipse([cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2], fill=255)
        elif shape == "stick":
            angle = rng.uniform(0, np.pi)
            dx, dy = np.cos(angle) * size * 1.5, np.sin(angle) * size * 1.5
            draw.line([cx - dx, cy - dy, cx + dx, cy + dy], fill=255, width=max(2, int(size / 5)))
        else:
            draw.ellipse([cx - size, cy - size, cx + size, cy + size], outline=255, width=max(2, int(size / 4)))
        alpha = np.asarray(layer, dtype=np.float32)[..., None] / 255.0
        color = rng.uniform(20, 240, size=3).astype(np.float32)
        shading = 0.8 + 0.2 * np.linspace(1, -1, h, dtype=np.float32)[:, None, None]
        image[:] = image * (1 - alpha) + color * shading * alpha


def _draw_pet(rng, breed: Breed, h, w):
    """Draw the pet's silhouette; returns the mask (0..255) and the head box in pixels."""
    layer = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(layer)
    facing = 1 if rng.uniform() < 0.5 else -1
    sitting = rng.uniform() < 0.35
    body_h = rng.uniform(0.16, 0.32) * min(h, w) * (1.3 if sitting else 1.0)
    aspect = breed.body_aspect * rng.uniform(0.9, 1.1) * (0.55 if sitting else 1.0)
    body_w = body_h * aspect
    legs = body_h * breed.leg_length * rng.uniform(0.9, 1.1) * (0.35 if sitting else 1.0)
    head_r = body_h * breed.head_scale * rng.uniform(0.9, 1.1)
    cx = rng.uniform(0.3, 0.7) * w
    cy = rng.uniform(0.35, 0.65) * h

    leg_w = max(3, body_h * rng.uniform(0.14, 0.22))
    feet_y = cy + body_h / 2 + legs
    leg_xs = (cx - body_w * 0.35, cx - body_w * 0.2, cx + body_w * 0.2, cx + body_w * 0.35)
    for lx in leg_xs if not sitting else leg_xs[1:3]:
        draw.rounded_rectangle([lx - leg_w / 2, cy, lx + leg_w / 2, feet_y], radius=leg_w / 2, fill=255)
    draw.ellipse([cx - body_w / 2, cy - body_h / 2, cx + body_w / 2, cy + body_h / 2], fill=255)

    tail_base = (cx - facing * body_w * 0.45, cy - body_h * 0.1)
    tail_len = body_w * breed.tail_length
    bend = rng.uniform(-1.2, 0.6)
    points = [
        (tail_base[0] - facing * tail_len * t, tail_base[1] + tail_len * (bend * t * t - 0.5 * t))
        for t in np.linspace(0, 1, 8)
    ]
    draw.line(points, fill=255, width=max(2, int(body_h * breed.tail_width)), joint="curve")

    head_x = cx + facing * body_w * (0.3 if sitting else 0.5)
    head_y = cy - body_h * (0.75 if sitting else 0.45)
    ear = head_r * breed.ear_size
    for side in (-1, 1):
        ex = head_x + side * head_r * 0.55
        if breed.floppy_ears:
            draw.ellipse([ex - ear * 0.35, head_y - head_r * 0.3, ex + ear * 0.35, head_y + ear * 1.2], fill=255)
        else:
            draw.polygon([(ex - ear * 0.45, head_y - head_r * 0.5), (ex + ear * 0.45, head_y - head_r * 0.5),
                          (ex + side * ear * 0.15, head_y - head_r * 0.5 - ear * 1.1)], fill=255)
    draw.ellipse([head_x - head_r, head_y - head_r, head_x + head_r, head_y + head_r], fill=255)
    snout = head_r * breed.snout
    draw.ellipse([head_x + facing * snout - head_r * 0.55, head_y - head_r * 0.1,
                  head_x + facing * snout + head_r * 0.55, head_y + head_r * 0.65], fill=255)
    mask = np.asarray(layer, dtype=np.float32)
    eyes = [(head_x + facing * head_r * 0.15 + side * head_r * 0.35, head_y - head_r * 0.15) for side in (-1, 1)]
    box = (head_y - head_r - ear, head_x - head_r - abs(snout), head_y + head_r, head_x + head_r + abs(snout))
    return mask, box, eyes, head_r


def _coat(rng, breed: Breed, mask, h, w, scale):
    """Fur colour over the whole frame: base colour, pattern, fur grain and volume shading."""
    base = np.array(breed.base_color, np.float32) * rng.uniform(0.85, 1.15)
    second = np.array(breed.second_color, np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    fur = _smooth_noise(rng, (h, w), breed.fur_scale * scale * 0.3, anisotropy=0.25)
    coat = np.broadcast_to(base, (h, w, 3)).copy()
    inside = mask > 127
    ys, xs = np.nonzero(inside)
    top, bottom = (ys.min(), ys.max()) if ys.size else (0, h)
    if breed.pattern == "tabby":
        angle = rng.uniform(-0.3, 0.3)
        stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) / (breed.fur_scale * 2.5 * scale) + fur)
        coat *= (0.75 + 0.25 * (stripes > 0.2))[..., None]
    elif breed.pattern == "spots":
        spots = _smooth_noise(rng, (h, w), breed.fur_scale * 2 * scale) > 1.0
        coat[spots] = second
    elif breed.pattern == "bicolor":
        belly = (yy - top) / max(bottom - top, 1) > rng.uniform(0.45, 0.7)
        patch = _smooth_noise(rng, (h, w), 10 * scale) > 0.8
        coat[belly | patch] = second
    elif breed.pattern == "points":
        distance = ndimage.distance_transform_edt(inside)
        extremity = np.exp(-distance / (6 * scale))
        coat = coat * (1 - extremity[..., None]) + second * 0.5 * extremity[..., None]
    volume = ndimage.distance_transform_edt(inside)
    volume = np.sqrt(np.clip(volume / (volume.max() + 1e-6), 0, 1))
    coat *= (0.6 + 0.4 * volume)[..., None]
    coat *= (1 + 0.12 * fur)[..., None]
    return coat


def _ragged(rng, mask, breed: Breed, scale):
    """Roughen the outline by the breed's fluffiness: long fur frays the silhouette."""
    amount = breed.fluffiness * 4 * scale
    if amount < 0.5:
        return mask
    h, w = mask.shape
    dy = _smooth_noise(rng, (h, w), 2.5 * scale) * amount
    dx = _smooth_noise(rng, (h, w), 2.5 * scale) * amount
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return ndimage.map_coordinates(mask, [yy + dy, xx + dx], order=1, mode="constant")


def _trimap(mask, band):
    """Oxford-style trimap: 1 pet, 2 background, 3 a band of `band` pixels each side of the outline."""
    pet = mask > 127
    structure = ndimage.generate_binary_structure(2, 1)
    grown = ndimage.binary_dilation(pet, structure, iterations=band)
    shrunk = ndimage.binary_erosion(pet, structure, iterations=band)
    trimap = np.full(mask.shape, BACKGROUND, np.uint8)
    trimap[grown] = BORDER
    trimap[shrunk] = PET
    return trimap


def render_example(seed: int, index: int) -> Example:
    """Render example `index` of the split seeded `seed`; the same pair gives the same picture."""
    rng = np.random.default_rng([seed, index])
    label = int(rng.integers(len(BREEDS)))
    breed = breeds()[label]
    longest = int(rng.integers(224, 384))
    aspect = rng.uniform(0.65, 1.5)
    h, w = (longest, int(longest / aspect)) if aspect > 1 else (int(longest * aspect), longest)
    scale = longest / 256

    image = _background(rng, h, w).astype(np.float32)
    _draw_clutter(rng, image, h, w)
    mask, box, eyes, head_r = _draw_pet(rng, breed, h, w)
    mask = _ragged(rng, mask, breed, scale)
    coat = _coat(rng, breed, mask, h, w, scale)
    alpha = (mask / 255.0)[..., None]
    image = image * (1 - alpha) + coat * alpha

    eye_layer = Image.new("L", (w, h), 0)
    eye_draw = ImageDraw.Draw(eye_layer)
    eye_r = max(1.5, head_r * 0.12)
    for ex, ey in eyes:
        eye_draw.ellipse([ex - eye_r, ey - eye_r, ex + eye_r, ey + eye_r], fill=255)
    eye_alpha = (np.asarray(eye_layer, np.float32) / 255.0)[..., None] * alpha
    eye_color = np.array([60, 140, 60] if breed.is_cat else [40, 25, 15], np.float32)
    image = image * (1 - eye_alpha) + eye_color * eye_alpha

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    light_angle = rng.uniform(0, 2 * np.pi)
    light = 1 + rng.uniform(0, 0.35) * ((xx / w - 0.5) * np.cos(light_angle) + (yy / h - 0.5) * np.sin(light_angle))
    vignette = 1 - rng.uniform(0, 0.4) * (((xx / w - 0.5) ** 2 + (yy / h - 0.5) ** 2) * 2)
    cast = rng.uniform(0.85, 1.15, size=3).astype(np.float32)
    image = image * (light * vignette)[..., None] * cast * rng.uniform(0.6, 1.25)
    blur = rng.choice([0.0, 0.0, 0.6, 1.2, 2.0])
    if blur:
        image = ndimage.gaussian_filter(image, (blur, blur, 0))
    image += rng.normal(0, rng.uniform(1, 6), size=image.shape).astype(np.float32)
    image = np.clip(image, 0, 255).astype(np.uint8)

    trimap = _trimap(mask, band=max(2, int(round(1.5 * scale))))
    ymin, xmin, ymax, xmax = box
    head_box = (
        float(np.clip(ymin / h, 0, 1)), float(np.clip(xmin / w, 0, 1)),
        float(np.clip(ymax / h, 0, 1)), float(np.clip(xmax / w, 0, 1)),
    )
    return Example(image=image, trimap=trimap, label=label, is_cat=breed.is_cat, head_box=head_box)

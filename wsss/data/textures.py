"""Shapes, textures and scene composition for the synthetic VOC-like benchmark.

Every foreground class is a (shape family, texture) pair; background clutter uses irregular blobs, class
shapes with non-class textures (shape decoys) and small irregular fragments of class textures (texture
decoys), so neither shape nor texture alone names a class. Every textured region, object or clutter, gets
two colours drawn from one shared distribution (a dark and a light shade of a random hue): a single
pixel's colour says nothing about its class.
"""

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter

#: Foreground classes, id = position + 1: (shape family, texture).
CLASS_SPECS = (
    ("disc", "dots"), ("square", "checker"), ("triangle", "hstripes"), ("ring", "vstripes"),
    ("cross", "zigzag"), ("ellipse", "bricks"), ("star", "grid"), ("crescent", "diamonds"),
)  # fmt: skip
#: Textures that never fill an object.
CLUTTER_TEXTURES = ("blotches", "gradient", "plain")
#: Smallest object diameter in pixels: thin parts (ring, cross arms) stay ≥ 5 px wide.
MIN_DIAMETER = 18
#: Texture period = image side / PERIOD_DIVISOR (at least 6 px), ±15 % per image.
PERIOD_DIVISOR = 10
#: Half-open ranges of the number of shape decoys and texture decoys per image.
SHAPE_DECOYS = (0, 2)
TEXTURE_DECOYS = (0, 2)


def shape_mask(shape: str, size: int, center: tuple[float, float], radius: float, angle: float) -> np.ndarray:
    """Boolean (size, size) mask of a shape family of circumradius ``radius`` rotated by ``angle`` rad."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    dx, dy = (x - center[0]) / radius, (y - center[1]) / radius
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    rho, theta = np.hypot(u, v), np.arctan2(v, u)
    if shape == "disc":
        return rho <= 1
    if shape == "square":
        return np.maximum(abs(u), abs(v)) <= 0.75
    if shape == "triangle":  # equilateral, circumradius 1: three half-planes at distance 0.5
        normals = np.deg2rad([270.0, 30.0, 150.0])
        return np.all([u * np.cos(a) + v * np.sin(a) <= 0.5 for a in normals], axis=0)
    if shape == "ring":
        return (rho <= 1) & (rho >= 0.45)
    if shape == "cross":
        return ((abs(u) <= 0.32) & (abs(v) <= 1)) | ((abs(v) <= 0.32) & (abs(u) <= 1))
    if shape == "ellipse":
        return u**2 + (v / 0.55) ** 2 <= 1
    if shape == "star":  # five points, radius linear in angle between tips (1) and notches (0.45)
        t = (theta % (2 * np.pi / 5)) / (2 * np.pi / 5)
        return rho <= 0.45 + 0.55 * abs(2 * t - 1)
    if shape == "crescent":
        return (rho <= 1) & ((u - 0.45) ** 2 + v**2 > 0.75**2)
    raise ValueError(f"unknown shape family {shape!r}")


def blob_mask(size: int, center: tuple[float, float], radius: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of an irregular blob: a star-convex outline with smooth random radius."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    theta = np.arctan2(y - center[1], x - center[0])
    harmonics = rng.normal(0, 0.18, size=(4, 2)) / np.arange(1, 5)[:, None]
    outline = 1 + sum(a * np.cos(k * theta) + b * np.sin(k * theta) for k, (a, b) in enumerate(harmonics, 2))
    return np.hypot(x - center[0], y - center[1]) <= radius * outline


def texture(kind: str, size: int, period: float, rng: np.random.Generator) -> np.ndarray:
    """(size, size) float map in [0, 1] mixing two colours; ``period`` is the pattern period in pixels."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    x, y = x + rng.uniform(0, period), y + rng.uniform(0, period)

    def bands(coordinate: np.ndarray, duty: float = 0.5) -> np.ndarray:
        return ((coordinate / period) % 1.0 < duty).astype(np.float32)

    if kind == "hstripes":
        return bands(y)
    if kind == "vstripes":
        return bands(x)
    if kind == "diamonds":  # both diagonals: a lattice of diamonds
        return np.maximum(bands((x + y) / np.sqrt(2), 0.3), bands((x - y) / np.sqrt(2), 0.3))
    if kind == "bricks":  # rows of bricks, every other row shifted by half a brick
        row = np.floor(y / period)
        return np.maximum(bands(y, 0.25), bands(x / 2 + 0.5 * period * (row % 2), 0.15))
    if kind == "checker":
        cell = 0.6 * period
        return ((np.floor(x / cell) + np.floor(y / cell)) % 2).astype(np.float32)
    if kind == "dots":
        spacing = 1.2 * period
        fx, fy = (x / spacing) % 1.0 - 0.5, (y / spacing) % 1.0 - 0.5
        return (np.hypot(fx, fy) < 0.3).astype(np.float32)
    if kind == "grid":
        return np.maximum(bands(x, 0.3), bands(y, 0.3))
    if kind == "zigzag":
        return bands(y + abs((x / period) % 1.0 - 0.5) * period)
    if kind == "blotches":
        return (gaussian_filter(rng.normal(size=(size, size)), 0.8 * period) > 0).astype(np.float32)
    if kind == "gradient":
        direction = rng.uniform(0, 2 * np.pi)
        ramp = x * np.cos(direction) + y * np.sin(direction)
        return ((ramp - ramp.min()) / (np.ptp(ramp) + 1e-9)).astype(np.float32)
    if kind == "plain":
        return np.zeros((size, size), np.float32)
    raise ValueError(f"unknown texture {kind!r}")


def colour_pair(rng: np.random.Generator) -> np.ndarray:
    """A dark and a light RGB colour of one random hue and saturation, in random order: shape (2, 3)."""
    hsv = np.float32([[[rng.uniform(0, 360), rng.uniform(0.25, 1.0), rng.uniform(0.1, 0.45)]]]).repeat(2, 1)
    hsv[0, 1, 2] = rng.uniform(0.6, 1.0)
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0].astype(np.float64) * 255
    return rgb[rng.permutation(2)]


def paint(image: np.ndarray, mask: np.ndarray, kind: str, period: float, rng: np.random.Generator) -> None:
    """Fill ``image`` (H, W, 3 float) inside ``mask`` with texture ``kind`` in a fresh colour pair."""
    weight = texture(kind, image.shape[0], period, rng)[mask][:, None]
    first, second = colour_pair(rng)
    image[mask] = first * (1 - weight) + second * weight


def sample_image_classes(rng: np.random.Generator, num_classes: int, cooccurrence: float) -> list[int]:
    """Foreground class ids of one image: 1–3 distinct classes, uniform in count and identity.

    With probability ``cooccurrence`` the image is forced to hold classes 1 and 2 (plus, one time in
    three, a third class), mimicking boat/water.
    """
    if num_classes >= 2 and rng.random() < cooccurrence:
        others = np.arange(3, num_classes + 1)
        third = [int(rng.choice(others))] if len(others) and rng.random() < 1 / 3 else []
        return [1, 2, *third]
    count = int(rng.integers(1, min(3, num_classes) + 1))
    return sorted(int(c) for c in rng.choice(num_classes, size=count, replace=False) + 1)


def safe_interior(region: np.ndarray) -> np.ndarray:
    """Pixels of a boolean region at Chebyshev distance ≥ 3 from its outside (room for a 3-px mark)."""
    return cv2.erode(region.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)


def _placement_ok(instances: np.ndarray, areas: dict[int, int]) -> bool:
    """Whether every instance keeps ≥ 40 % of its area visible and a non-empty safe interior."""
    for instance, area in areas.items():
        visible = instances == instance
        if visible.sum() < 0.4 * area or not safe_interior(visible).any():
            return False
    return True


def compose_scene(
    rng: np.random.Generator, size: int, classes: list[int], max_tries: int = 30
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Render one image with objects of ``classes`` on clutter.

    Returns the RGB image (size, size, 3) uint8, the visible-instance map (0 = background, i = i-th
    object) and the class id of every instance (index i - 1). Each class gets one object, or two with
    probability 1/4; objects span 15–50 % of the side (at least ``MIN_DIAMETER`` px), may overlap (the
    later one is on top) but each keeps ≥ 40 % of its area and some interior visible.
    """
    period = max(6.0, size / PERIOD_DIVISOR) * rng.uniform(0.85, 1.15)
    image = np.zeros((size, size, 3), np.float64)
    paint(image, np.ones((size, size), bool), str(rng.choice(CLUTTER_TEXTURES)), period, rng)
    for _ in range(int(rng.integers(4, 9))):
        blob = blob_mask(size, tuple(rng.uniform(0, size, 2)), rng.uniform(0.05, 0.25) * size, rng)
        paint(image, blob, str(rng.choice(CLUTTER_TEXTURES)), period, rng)
    for _ in range(int(rng.integers(*SHAPE_DECOYS))):  # shape decoys: a class shape with a clutter texture
        shape = CLASS_SPECS[int(rng.integers(len(CLASS_SPECS)))][0]
        radius = max(MIN_DIAMETER, rng.uniform(0.15, 0.35) * size) / 2
        mask = shape_mask(
            shape, size, tuple(rng.uniform(radius, size - radius, 2)), radius, rng.uniform(0, 2 * np.pi)
        )
        paint(image, mask, str(rng.choice(CLUTTER_TEXTURES)), period, rng)
    for _ in range(int(rng.integers(*TEXTURE_DECOYS))):  # texture decoys: a small fragment of a class texture
        fragment = blob_mask(size, tuple(rng.uniform(0, size, 2)), rng.uniform(0.04, 0.08) * size, rng)
        paint(image, fragment, CLASS_SPECS[int(rng.integers(len(CLASS_SPECS)))][1], period, rng)

    instances = np.zeros((size, size), np.uint8)
    instance_classes: list[int] = []
    areas: dict[int, int] = {}
    objects = [c for c in classes for _ in range(1 + (rng.random() < 0.25))]
    for cls in objects:
        shape, kind = CLASS_SPECS[cls - 1]
        instance = len(instance_classes) + 1
        for _ in range(max_tries):
            radius = max(MIN_DIAMETER, rng.uniform(0.15, 0.5) * size) / 2
            center = tuple(rng.uniform(0.7 * radius, size - 0.7 * radius, 2))
            mask = shape_mask(shape, size, center, radius, rng.uniform(0, 2 * np.pi))
            candidate = np.where(mask, np.uint8(instance), instances)
            if _placement_ok(candidate, {**areas, instance: int(mask.sum())}):
                instances, areas[instance] = candidate, int(mask.sum())
                instance_classes.append(cls)
                paint(image, mask, kind, period, rng)
                break
    image = gaussian_filter(image, sigma=(0.5, 0.5, 0)) + rng.normal(0, 4, image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), instances, instance_classes

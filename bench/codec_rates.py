"""The host's side of the GPU job's workload: clips, chunks, and timed FFmpeg decode and encode.

Benchmark clips are cut into chunks by the CPU side's own command
(:func:`tasks.split_command.build_split_argv`, which needs nothing beyond the standard library,
so it runs on a GPU host too), in the pixel format the CPU side would choose for them
(:attr:`VideoInfo.chunk_format`). Decode and encode rates are measured with the command lines
``gpu.stylize`` itself runs (:func:`gpu.video_io.decode_argv` to the chunks' own planar format
with the job's decoder threads, :class:`gpu.video_io.FrameWriter`), so they are the host's
capacity for this job's work, not FFmpeg's in general. Raw chunks are read as the job reads
them, with :class:`gpu.video_io.RawFrameReader`.
"""

from __future__ import annotations

import queue
import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpu.jobdir import JobManifest
from gpu.video_io import (
    COLOUR_TAGS,
    FFmpegError,
    FrameWriter,
    RawFrameReader,
    decode_argv,
    frame_bytes,
    run_ffmpeg,
)
from tasks.split_command import ChunkFormat, choose_chunk_format

RGB_PIX_FMT_PREFIXES = ("gbr", "rgb", "bgr", "argb", "abgr", "0rgb", "0bgr", "x2rgb", "x2bgr")
YUV_PIX_FMT_PREFIXES = ("yuv", "nv", "p010", "p016", "p210", "p216", "p410", "p416")
RANGE_NAMES = {"tv": False, "pc": True}
RAW_READ_FRAMES = 8
"""Frames per read from a raw chunk: the job's default batch on CUDA."""
DECODE_METHODS = {
    "utvideo": "ffmpeg decode to the chunks' own planar format, output discarded",
    "rawvideo": f"readinto a reused buffer of {RAW_READ_FRAMES} frames, as the job reads",
}
"""What :func:`decode_rate` measures for each chunk codec, for reports."""


@dataclass(frozen=True)
class VideoInfo:
    """What the benchmark needs to know about a source clip.

    ``pix_fmt``, ``colorspace`` (FFmpeg's tag, None when untagged) and ``full_range`` describe
    its pixels as FFmpeg reports them, which is what the chunk format depends on.
    """

    width: int
    height: int
    fps: float
    frames: int
    stream_index: int
    demuxer: str
    audio: bool
    pix_fmt: str = "yuv420p"
    colorspace: str | None = None
    full_range: bool = False

    @property
    def pixel_family(self) -> str:
        if self.pix_fmt.startswith(RGB_PIX_FMT_PREFIXES):
            return "rgb"
        return "yuv" if self.pix_fmt.startswith(YUV_PIX_FMT_PREFIXES) else "other"

    @property
    def chunk_format(self) -> ChunkFormat:
        """The chunks' pixel format, as the CPU side would choose it for this clip."""
        return choose_chunk_format(self.pixel_family, self.width, self.height, self.colorspace,
                                   self.full_range)


def source_clip_argv(ffmpeg: str, target: Path, width: int, height: int, fps: int, frames: int,
                     audio: bool) -> list[str]:
    """A moving test pattern encoded like a typical upload: H.264 yuv420p in MP4, AAC audio.

    ``testsrc2`` moves and has edges, gradients and text; the x264 settings are a camera's or
    phone's (B-frames, CRF 18), so decoding and splitting it costs what an upload costs.
    """
    seconds = frames / fps
    inputs = ["-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps}"]
    if audio:
        inputs += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:d={seconds}"]
    audio_out = ["-map", "1:a:0", "-c:a", "aac", "-b:a", "128k"] if audio else []
    return [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *inputs,
            "-map", "0:v:0", "-frames:v", str(frames), "-c:v", "libx264", "-preset", "veryfast",
            "-crf", "18", "-pix_fmt", "yuv420p", *audio_out, "-movflags", "+faststart",
            str(target)]


def count_frames_argv(ffmpeg: str, path: Path) -> list[str]:
    """List the packets of the first video stream (stream copy, nothing decoded), one per line.

    ``framecrc`` rather than ``-progress``'s ``frame=``: FFmpeg 7.0 reports no frame count for a
    stream copy there (seen with imageio-ffmpeg 0.6.0's 7.0.2 on the H200 machine).
    """
    return [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path),
            "-map", "0:v:0", "-c", "copy", "-f", "framecrc", "-"]


def count_frames(ffmpeg: str, path: Path) -> int:
    packets = [line for line in run_ffmpeg(count_frames_argv(ffmpeg, path)).splitlines()
               if line.strip() and not line.startswith(b"#")]
    if not packets:
        raise FFmpegError(f"no video packet in {path}")
    return len(packets)


VIDEO_STREAM = re.compile(
    r"Stream #0:(?P<index>\d+)\S*: Video: [^,]*, (?P<pix_fmt>\w+)(?:\((?P<details>[^)]*)\))?, "
    r"(?P<width>\d+)x(?P<height>\d+)[ ,].*?(?P<fps>[\d.]+) fps")
"""FFmpeg's line for a video stream, such as ``Stream #0:0[0x1](und): Video: h264 (High) (avc1 /
0x31637661), yuv420p(tv, bt709, progressive), 1920x1080 [SAR 1:1 DAR 16:9], ..., 30 fps``."""


def colour_details(details: str | None) -> tuple[str | None, bool]:
    """The colorspace tag (None when unknown) and full range of a pixel format's details.

    FFmpeg writes the range (``tv``/``pc``) when known, then the colorspace, primaries and
    transfer as one name when they agree or as ``space/primaries/transfer`` when not, then the
    field order.
    """
    colorspace, full_range = None, False
    for item in (details or "").split(", "):
        if item in RANGE_NAMES:
            full_range = RANGE_NAMES[item]
        elif "/" in item:
            colorspace = item.split("/")[0]
        elif item in ("bt709", "bt470bg", "smpte170m", "smpte240m", "bt2020nc", "fcc"):
            colorspace = item
    return (None if colorspace in (None, "unknown") else colorspace), full_range


def probe(ffmpeg: str, path: Path) -> VideoInfo:
    """Size, rate, frame count, pixels, video stream and demuxer of ``path``, from FFmpeg's own
    report."""
    proc = subprocess.run([ffmpeg, "-hide_banner", "-nostdin", "-i", str(path)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    video = VIDEO_STREAM.search(proc.stderr)
    container = re.search(r"Input #0, ([\w,]+), from", proc.stderr)
    if not video or not container:
        raise FFmpegError(f"cannot read the video stream of {path}", proc.stderr)
    names = container.group(1).split(",")
    demuxer = "mov" if "mov" in names else "matroska" if "matroska" in names else names[0]
    colorspace, full_range = colour_details(video["details"])
    pix_fmt = video["pix_fmt"]
    return VideoInfo(width=int(video["width"]), height=int(video["height"]),
                     fps=float(video["fps"]), frames=count_frames(ffmpeg, path),
                     stream_index=int(video["index"]), demuxer=demuxer,
                     audio=bool(re.search(r"Stream #0:\d+\S*: Audio:", proc.stderr)),
                     pix_fmt=pix_fmt, colorspace=colorspace,
                     full_range=full_range or pix_fmt.startswith("yuvj"))


SHOWINFO_SIZE = re.compile(r" s:(\d+)x(\d+) ")


def display_size(ffmpeg: str, path: Path, stream_index: int) -> tuple[int, int]:
    """Width and height of stream ``stream_index`` of ``path`` as FFmpeg outputs its frames:
    after autorotation, as the split writes them (one frame decoded)."""
    argv = [ffmpeg, "-hide_banner", "-nostdin", "-i", str(path), "-map", f"0:{stream_index}",
            "-frames:v", "1", "-vf", "showinfo", "-f", "null", "-"]
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    found = SHOWINFO_SIZE.search(proc.stderr)
    if proc.returncode or not found:
        raise FFmpegError(f"cannot read the frame size of {path}: {' '.join(argv)}", proc.stderr)
    return int(found.group(1)), int(found.group(2))


def _concurrently(jobs: list[Callable[[], None]], processes: int) -> float:
    """Run ``jobs`` with at most ``processes`` at a time; return the wall seconds."""
    pending = list(reversed(jobs))
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker() -> None:
        while True:
            with lock:
                if not pending or errors:
                    return
                job = pending.pop()
            try:
                job()
            except BaseException as err:  # noqa: BLE001 - re-raised below
                errors.append(err)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(max(1, processes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - started


def decode_rate(ffmpeg: str, input_dir: Path, manifest: JobManifest, processes: int,
                threads: int) -> float:
    """Frames/s getting the raw frames of the job's chunks as the job does, ``processes`` chunks
    at a time (see :data:`DECODE_METHODS`).

    Ut Video chunks: FFmpeg decodes each to the chunks' own planar format (no conversion) with
    ``threads`` decoder threads, output discarded. Raw chunks: each is read into one of
    ``processes`` reused buffers (plain memory: the job's are pinned under CUDA, which reads
    into just as fast); ``threads`` does not apply.
    """
    fmt = manifest.input_format
    chunks = [input_dir / c.file for c in manifest.chunks]

    def decode(chunk: Path) -> Callable[[], None]:
        def run() -> None:
            argv = decode_argv(ffmpeg, chunk, fmt.pix_fmt, threads)
            proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  stdin=subprocess.DEVNULL)
            if proc.returncode:
                raise FFmpegError(f"decode failed: {' '.join(argv)}", proc.stderr.decode())
        return run

    buffers: queue.SimpleQueue[np.ndarray] = queue.SimpleQueue()

    def read(chunk: Path) -> Callable[[], None]:
        def run() -> None:
            buffer = buffers.get()
            try:
                with RawFrameReader(chunk, manifest.width, manifest.height,
                                    fmt.pix_fmt) as reader:
                    while reader.read_into(buffer) == len(buffer):
                        pass
            finally:
                buffers.put(buffer)
        return run

    if fmt.codec == "rawvideo":
        for _ in range(processes):
            buffer = np.empty((RAW_READ_FRAMES, frame_bytes(fmt.pix_fmt, manifest.width,
                                                             manifest.height)), np.uint8)
            buffer.fill(0)  # faulted in now, as the job's pinned buffers are: not timed
            buffers.put(buffer)
        jobs = [read(c) for c in chunks]
    else:
        jobs = [decode(c) for c in chunks]
    return manifest.total_frames / _concurrently(jobs, processes)


def encode_rate(ffmpeg: str, sample: np.ndarray, width: int, height: int, crf: int, preset: str,
                processes: int, threads: int, frames: int, workdir: Path) -> float:
    """Frames/s of ``processes`` encoders at once, each fed ``frames`` frames through a pipe
    (``sample``, YUV 4:2:0 rows, repeated) with the job's command line.

    ``threads`` is each encoder's, 0 leaving it to x264 (1.5 per core). The outputs go to files in
    ``workdir``, deleted afterwards (FFmpeg will not overwrite /dev/null without ``-y``, which
    the job's command line does not have).
    """

    def encode(target: Path) -> Callable[[], None]:
        def run() -> None:
            with FrameWriter(ffmpeg, target, width, height, crf, preset, threads) as writer:
                written = 0
                while written < frames:
                    count = min(len(sample), frames - written)
                    writer.write(sample[:count])
                    written += count
                writer.close()
            target.unlink()
        return run

    targets = [workdir / f"rate-{preset}-{n}.mkv" for n in range(processes)]
    return processes * frames / _concurrently([encode(t) for t in targets], processes)


def encode_quality(ffmpeg: str, sample: np.ndarray, width: int, height: int, crf: int,
                   preset: str, workdir: Path) -> tuple[float, float]:
    """``sample`` encoded as the job encodes it, compared with itself.

    Returns:
        The mean PSNR in dB (FFmpeg's average over Y, U and V) and the encoded bytes per frame.
    """
    raw, encoded = workdir / f"sample-{width}x{height}.yuv", workdir / f"sample-{preset}.mkv"
    raw.write_bytes(np.ascontiguousarray(sample).data)
    with FrameWriter(ffmpeg, encoded, width, height, crf, preset) as writer:
        writer.write(sample)
        writer.close()
    argv = [ffmpeg, "-hide_banner", "-nostdin", "-f", "rawvideo", "-pix_fmt", "yuv420p",
            "-video_size", f"{width}x{height}", *COLOUR_TAGS, "-i", str(raw),
            "-i", str(encoded), "-lavfi", "[1:v][0:v]psnr", "-f", "null", "-"]
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    found = re.search(r"PSNR .*average:(\S+)", proc.stderr)
    bytes_per_frame = encoded.stat().st_size / len(sample)
    encoded.unlink()
    raw.unlink()
    if proc.returncode or not found:
        raise FFmpegError(f"PSNR measurement failed: {' '.join(argv)}", proc.stderr)
    return float(found.group(1)), bytes_per_frame

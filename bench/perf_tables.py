"""Rewrite the generated tables of ``docs/performance.md`` from the JSON records in ``docs/``,
so that the figures there and the records cannot drift.

A table sits between ``<!-- table:NAME -->`` and ``<!-- /table -->``; NAME picks its entry in
:data:`TABLES`, which names the records it reads and how to lay them out. Everything outside
the markers is hand-written and kept as it is. Standard library only.

    python -m bench.perf_tables            # rewrite the tables
    python -m bench.perf_tables --check    # exit 1 if a table differs from its records
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from bench import variant_summary
from tasks.repo import REPO_ROOT

DOCS_DIR = REPO_ROOT / "docs"
PAGE = "performance.md"
BLOCK = re.compile(r"(<!-- table:([\w.-]+) -->\n)(.*?)(<!-- /table -->)", re.DOTALL)

Rows = tuple[list[str], list[list[str]]]
"""A table's header and its rows of cells."""
Records = dict[str, Any]
"""The records a table reads, by file name, in the order :data:`TABLES` lists them."""

ROW_LABELS: dict[str, tuple[str, ...]] = {
    # The file does not say which network each entry timed: the first three are the
    # strength-conditioned one (fine-tuned from the shipped weights), the last three the
    # unconditioned network shipped before it.
    "model_fps_conditioned_h100.json": ("starry_night, strength-conditioned",) * 3
    + ("starry_night, unconditioned (shipped before)",) * 3,
}


class PerfTablesError(Exception):
    """The page or a record cannot be turned into tables; the page is left as it was."""


def rate(fps: float) -> str:
    """Frames/s with as many digits as tell: two below 10 (the CPU's), none above."""
    return f"{fps:.2f}" if fps < 10 else f"{fps:,.0f}"


def percent(fraction: float | None) -> str:
    return "–" if fraction is None else f"{fraction * 100:.0f}%"


def clip_name(clip: dict[str, Any]) -> str:
    """A clip by what it is, its size and length (records name clips by keys or paths)."""
    return f"{clip['size'].replace('x', '×')}, {clip['frames']} frames"


def job_settings(settings: dict[str, Any]) -> str:
    """A report's settings where they differ from the bench's defaults."""
    words = [f"compile {settings['compile']}"]
    if "chunk_codec" in settings:
        words.append(f"{settings['chunk_codec']} chunks")
    for key, text in (("batch_size", "batch {}"), ("encoders", "{} in flight"),
                      ("encoder_threads", "{} x264 threads"), ("ranks", "{} ranks")):
        if settings.get(key, "default") not in ("default", 1):
            words.append(text.format(settings[key]))
    return ", ".join(words)


def model_fps(docs: Records) -> Rows:
    """``bench.model_fps``: a row per network, size and batch, a column per variant; the
    record's best variant per network and size in bold."""
    ((name, document),) = docs.items()
    results = document["results"]
    labels = ROW_LABELS.get(name)
    if labels is not None and len(labels) != len(results):
        raise PerfTablesError(f"{name}: {len(results)} results but {len(labels)} labels")
    best = {(b["model"], b["size"], b["batch"], b["variant"]) for b in document.get("best", [])}
    variants = list(dict.fromkeys(r["variant"] for r in results))
    rows: dict[tuple[str, ...], dict[str, str]] = {}
    for n, r in enumerate(results):
        cell = (f"{rate(r['fps'])} fps, {r['psnr_db']:.1f} dB" if "fps" in r
                else f"skipped ({r['skipped']})" if "skipped" in r else "failed")
        if (r["model"], r["size"], r["batch"], r["variant"]) in best:
            cell = f"**{cell}**"
        network = labels[n] if labels else f"{r['model']} ({r['arch']})"
        rows.setdefault((network, r["size"].replace("x", "×"), str(r["batch"])), {})[
            r["variant"]] = cell
    return (["network", "size", "batch", *variants],
            [[*key, *(cells.get(v, "–") for v in variants)] for key, cells in rows.items()])


def stylize_jobs(docs: Records) -> Rows:
    """``bench.stylize_job`` reports (or files of named ones): the job against the host's
    x264 rate, per clip."""
    rows = []
    for name, document in docs.items():
        reports = ([(f"`{name}` {run}", report) for run, report in document["runs"].items()]
                   if "clips" not in document else [(f"`{name}`", document)])
        for label, report in reports:
            for clip in report["clips"]:
                job, encode = clip["job"], clip["host"]["encode"][report["settings"]["preset"]]
                rows.append([
                    label, job_settings(report["settings"]), clip_name(clip), rate(job["fps"]),
                    f"{job['warmup_seconds']:.1f} s",
                    f"{job['wall_seconds']:.1f} s ({rate(job['wall_fps'])} fps)",
                    f"{encode['fps']:.0f} ({encode['parallel_processes']} at once)",
                    f"{variant_summary.single_run(clip)['share']:.2f}",
                    percent(job.get("host_cpu_busy_fraction")),
                    percent(job["device_busy_fraction"]),
                    " / ".join(percent(job["stages"][stage]["busy_fraction"])
                               for stage in ("decode", "encode", "infer"))])
    return (["record", "settings", "clip", "job fps after warm-up", "warm-up", "end to end",
             "x264, host", "share of x264", "CPU busy", "device busy",
             "busy: decode / encode / network"], rows)


def job_variants(docs: Records) -> Rows:
    """``bench.variant_summary``'s groups: each setting's shares by call, median and count met."""
    (document,) = docs.values()
    rows = []
    for group in variant_summary.summarize(document):
        settings, ran = group["settings"], group["as_run"]
        other = [f"{key.replace('_', ' ')} {settings[key]}"
                 for key in ("encoders", "encoder_threads", "max_waiting_batches")
                 if settings.get(key, "default") not in ("default", "off")]
        by_call: dict[str, list[str]] = {}
        for run in group["runs"]:
            call = re.match(r"call (\d+)", run["run"])
            by_call.setdefault(call[1] if call else run["run"], []).append(f"{run['share']:.3f}")
        rows.append([f"{settings['chunk_codec']}, {ran['chunk_frames']} frames",
                     str(ran["batch_size"]), ", ".join(other) or "–", group["clip"],
                     "; ".join(f"{call}: {', '.join(s)}" for call, s in by_call.items()),
                     f"{group['median_share']:.3f}",
                     f"{group['met_runs']} of {len(group['runs'])}"])
    return (["chunks", "batch", "other settings", "clip", "share per run, by call", "median",
             f"≥ {variant_summary.TARGET_SHARE}"], rows)


def scaling(docs: Records) -> Rows:
    """``bench.scaling``: each rank count's frames/s and efficiency against one rank."""
    counts = sorted({run["ranks"] for d in docs.values() for c in d["clips"] for run in c["runs"]})
    rows = []
    for name, document in docs.items():
        for clip in document["clips"]:
            runs = {run["ranks"]: run for run in clip["runs"]}
            encode = clip["host"]["encode"][document["settings"]["preset"]]
            rows.append([
                f"`{name}`", job_settings(document["settings"]), clip_name(clip),
                *("–" if n not in runs else rate(runs[n]["fps"]) if n == 1 else
                  f"{rate(runs[n]['fps'])} ({runs[n]['efficiency']:.2f})" for n in counts),
                rate(encode["fps"]), f"{runs[max(runs)]['fps'] / encode['fps']:.2f}",
                *(" / ".join(percent(runs[n][key]) for n in sorted(runs))
                  for key in ("host_cpu_busy_fraction", "device_busy_fraction"))])
    return (["record", "settings", "clip",
             *(f"{n} rank" if n == 1 else f"{n} ranks (efficiency)" for n in counts),
             "x264, host", "most ranks / x264", "CPU busy by ranks", "GPU busy by ranks"], rows)


def encode_by_size(document: dict[str, Any]) -> dict[str, dict[tuple[str, int], dict]]:
    return {size: {(e["preset"], e["crf"]): e for e in document["by_size"][size]}
            for size in document["sizes"]}


def encode_choice(docs: Records) -> Rows:
    """``bench.encode_quality``'s three choices, each figure per size."""
    (document,) = docs.values()
    by_size = encode_by_size(document)
    rows = []
    for name, choice in document["choice"].items():
        key = (choice["preset"], choice["crf"])
        rows.append([name, f"`{key[0]}` CRF {key[1]}", *(
            " / ".join(format(by_size[size][key][figure], form) for size in by_size)
            for figure, form in (("speedup", ".2f"), ("bits_ratio", ".3f"),
                                 ("vmaf_drop", "+.2f")))])
    sizes = " / ".join(by_size)
    return (["choice", "setting", f"speedup ({sizes})", f"bits ratio ({sizes})",
             f"VMAF drop ({sizes})"], rows)


def encode_settings(docs: Records) -> Rows:
    """Every setting ``bench.encode_quality`` measured, per size and at its worst size."""
    (document,) = docs.values()
    by_size, rule = encode_by_size(document), document["rule"]
    chosen = {(c["preset"], c["crf"]): name for name, c in document["choice"].items()}
    rows = []
    for worst in document["comparisons"]:
        key = (worst["preset"], worst["crf"])
        meets = ("neither" if worst["vmaf_drop"] > rule["max_vmaf_drop"] else "VMAF only"
                 if worst["bits_ratio"] > rule["max_bits_ratio"] else "VMAF and bits")
        rows.append([key[0], str(key[1]), *(
            format(by_size[size][key][figure], form) for size in by_size for figure, form in
            (("fps_per_core", ".1f"), ("kbit_per_frame", ".0f"), ("vmaf", ".2f"))),
            f"{worst['speedup']:.2f}", f"{worst['bits_ratio']:.3f}", f"{worst['vmaf_drop']:+.2f}",
            meets, chosen.get(key, "")])
    return (["preset", "CRF", *(f"{size} {figure}" for size in by_size
                                for figure in ("fps/core", "kbit/frame", "VMAF")),
             "worst speedup", "worst bits ratio", "worst VMAF drop", "meets", "chosen as"], rows)


def quality_styles(docs: Records) -> Rows:
    """``bench.quality``: each network's losses, ratios to Gatys, warping error and speed."""
    (document,) = docs.values()
    rows = []
    for kind in ("styles", "baselines"):
        for name, entry in document[kind].items():
            gatys, speed = entry.get("gatys") or {}, entry["speed"]
            rows.append([
                name if kind == "styles" else f"{name} (baseline)",
                f"{entry['ours']['content_loss']:.3f}", f"{entry['ours']['style_loss']:.3f}",
                *(f"{gatys[f'ours_{loss}_same_frames'] / gatys[loss]:.2f}×" if gatys.get(loss)
                  else "–" for loss in ("style_loss", "content_loss")),
                " / ".join(f"{clip['warping_error']:.4f}" for clip in entry["temporal"].values()),
                f"{speed['ms_per_frame_batched']:.2f} ({speed['ms_per_frame_batch_1']:.1f})",
                f"{speed['speedup_vs_gatys_batched']:,.0f}×"])
    return (["network", "content loss", "style loss", "style vs Gatys", "content vs Gatys",
             f"warping error {' / '.join(document['clips'])}", "ms/frame batched (batch 1)",
             "speed vs Gatys"], rows)


def quality_comparisons(docs: Records) -> Rows:
    """``bench.quality``'s comparisons of a shipped network with its baselines."""
    (document,) = docs.values()
    return (["shipped vs baseline", "architectures", "temporal weights", "style loss",
             "content loss", "warping error"],
            [[f"{c['shipped']} vs {c['baseline']}",
              f"{c['arch']['shipped']} / {c['arch']['baseline']}",
              f"{c['temporal_weight']['shipped']:g} / {c['temporal_weight']['baseline']:g}",
              *(f"{c[k]['ratio']:.3f}×" for k in ("style_loss", "content_loss", "warping_error"))]
             for c in document["comparisons"]])


def goal_rows(checks: list[dict[str, Any]], prefix: list[str]) -> list[list[str]]:
    """A row per goal: its subjects' measured range and how many met it (unmeasured left out)."""
    goals: dict[str, list[dict[str, Any]]] = {}
    for check in checks:
        if check["measured"] is not None:
            goals.setdefault(check["goal"], []).append(check)
    rows = []
    for goal, found in goals.items():
        digits = 0 if found[0]["threshold"] >= 100 else 3  # speedups are counts, not ratios
        low, high = (f"{bound(c['measured'] for c in found):,.{digits}f}" for bound in (min, max))
        rows.append([*prefix, goal, low if low == high else f"{low}–{high}",
                     f"{sum(bool(c['met']) for c in found)} of {len(found)}"])
    return rows


def quality_goals(docs: Records) -> Rows:
    (document,) = docs.values()
    return ["goal", "measured", "met"], goal_rows(document["goals"]["checks"], [])


def candidates(docs: Records) -> Rows:
    """Candidates ``bench.quality`` scored before one was shipped: their goal checks."""
    (document,) = docs.values()
    shipped = document["shipped"].split(" ")[0]
    return (["candidate", "goal", "measured", "met"],
            [row for name, entry in document["candidates"].items()
             for row in goal_rows(entry["goals"]["checks"],
                                  [f"**{name}** (shipped)" if name == shipped else name])])


def strength_defaults(docs: Records) -> Rows:
    """``bench.quality.strength``: each network's default strength and its goals there."""
    (document,) = docs.values()
    rows = []
    for name, entry in document["styles"].items():
        at = entry.get("at_default")
        if at is None:
            rows.append([name, "none", "–", "–", "no strength keeps the structure"])
            continue
        spans = [f"{min(at[key]):.2f}–{max(at[key]):.2f}"
                 for key in ("structure_vs_gatys", "style_loss_vs_gatys")]
        met = [goal for goal, ok in (("structure", at["structure_goal_met"]),
                                     ("style", at["style_goal_met"])) if ok]
        rows.append([name, f"{entry['default_strength']:g}", *spans,
                     " and ".join(met) if met else "neither"])
    return (["network", "default strength",
             f"structure vs Gatys (goal ≥ {document['structure_goal']})",
             f"style loss vs Gatys (goal ≤ {document['style_goal']})", "goals met"], rows)


class Table(NamedTuple):
    files: tuple[str, ...]
    build: Callable[[Records], Rows]


TABLES: dict[str, Table] = {
    "model_fps": Table(("model_fps.json",), model_fps),
    "model_fps_conditioned": Table(("model_fps_conditioned_h100.json",), model_fps),
    "model_fps_batches": Table(("model_fps_1080p_batches.json",), model_fps),
    "arch_candidates": Table(("arch_candidates.json",), model_fps),
    "model_fps_cpu": Table(("model_fps_cpu.json",), model_fps),
    "stylize_job_h200": Table(tuple(f"stylize_job{s}.json" for s in (
        "", "_compiled", "_cuda_graphs", "_encoder_threads_4", "_encoders_8", "_encoders_4")),
        stylize_jobs),
    "job_variants": Table(("job_variants_h200.json",), job_variants),
    "scaling_x2": Table(("scaling.json", "scaling_graphs_utvideo.json",
                         "scaling_graphs_rawvideo.json"), scaling),
    "scaling_x4": Table(("scaling_x4.json", "scaling_x4_90s.json"), scaling),
    "encode_choice": Table(("encode_quality.json",), encode_choice),
    "encode_settings": Table(("encode_quality.json",), encode_settings),
    "quality_styles": Table(("quality.json",), quality_styles),
    "quality_goals": Table(("quality.json",), quality_goals),
    "quality_comparisons": Table(("quality.json",), quality_comparisons),
    "quality_cpu_style_weight10": Table(("quality_cpu_style_weight10.json",), quality_comparisons),
    "warping_cpu": Table(("warping_cpu.json",), quality_comparisons),
    "strength": Table(("strength.json",), strength_defaults),
    "strength_structure_candidates": Table(("strength_structure_candidates.json",),
                                           strength_defaults),
    "starry_night_candidates": Table(("starry_night_candidates.json",), candidates),
    "woman_with_a_hat_candidates": Table(("woman_with_a_hat_candidates.json",), candidates),
    "cpu_job": Table(tuple(f"stylize_job_cpu_demo{s}.json" for s in (
        "", "_first_run", "_batch8", "_utvideo", "_rawvideo", "_ranks")), stylize_jobs),
}


def markdown(header: list[str], rows: list[list[str]], files: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    sources = ", ".join(f"[{name}]({name})" for name in files)
    return ("\n".join(lines) + f"\n\n<sub>Generated from {sources} by "
            "`python -m bench.perf_tables`.</sub>\n")


def build_table(name: str, docs_dir: Path) -> str:
    table = TABLES.get(name)
    if table is None:
        raise PerfTablesError(f"unknown table {name!r}; known: {', '.join(TABLES)}")
    records = {}
    for file in table.files:
        try:
            records[file] = json.loads((docs_dir / file).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise PerfTablesError(f"table {name!r}: cannot read {docs_dir / file}: {error}") \
                from error
    try:
        return markdown(*table.build(records), table.files)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as error:
        raise PerfTablesError(f"table {name!r}: unexpected record layout: {error!r}") from error


def render(page: str, docs_dir: Path) -> str:
    """The page with every marked table rebuilt from its records."""
    if page.count("<!-- table:") != len(BLOCK.findall(page)):
        raise PerfTablesError("a <!-- table:NAME --> marker has no <!-- /table --> after it")
    return BLOCK.sub(lambda m: f"{m[1]}\n{build_table(m[2], docs_dir)}\n{m[4]}", page)


def write_atomically(path: Path, text: str) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=Path, default=DOCS_DIR,
                        help=f"folder of the records and of {PAGE} (default: docs/)")
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if a table differs from its records")
    args = parser.parse_args(argv)
    path = args.docs / PAGE
    try:
        page = path.read_text()
        rendered = render(page, args.docs)
    except (OSError, PerfTablesError) as error:
        print(f"perf_tables: {error}", file=sys.stderr)
        return 2
    if rendered != page:
        if args.check:
            stale = [old[1] for old, new in zip(BLOCK.findall(page), BLOCK.findall(rendered),
                                                strict=True) if old[2] != new[2]]
            print(f"perf_tables: {path} is out of date (tables: {', '.join(stale)}); "
                  "run python -m bench.perf_tables", file=sys.stderr)
            return 1
        write_atomically(path, rendered)
    return 0


if __name__ == "__main__":
    sys.exit(main())

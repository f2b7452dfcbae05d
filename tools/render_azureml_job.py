"""Print the Azure ML job that would stylize a video, without calling Azure.

Inspect what you would pay for before you pay for it: cluster, node count, ranks per node,
environment image and packages, the datastore folders mounted as input and output, and the
exact command line. Nothing is uploaded or submitted; no credential is needed.

Usage::

    python -m tools.render_azureml_job VIDEO [--style NAME] [--input-dir DIR]
        [--instance-count N] [--gpus-per-node G] [--compute] [-o job.yaml]

``VIDEO`` is the blob name under the input container (``starry_night/clip.mp4``) or a local file.
The job folder name ends in a digest of the prepared input folder (chunks, manifest, model);
pass ``--input-dir`` with a folder the flow prepared to see the exact name, otherwise the digest
is computed over the video alone and differs from the real run's. Settings come from the usual
``RESTYLE_*`` variables (``RESTYLE_AZUREML__COMPUTE``, ``RESTYLE_AZUREML__ENVIRONMENT``, ...).
``--compute`` prints the GPU cluster spec instead (deployments/azureml/compute.yaml + settings).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path, PurePosixPath

from tasks.compute.azureml.spec import load_compute_spec, render_job_yaml
from tasks.compute.base import GpuJob
from tasks.settings import RestyleSettings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("video", nargs="?", help="blob name (style/name.mp4) or local path")
    parser.add_argument("--style", help="style name (default: the blob's folder, else settings)")
    parser.add_argument(
        "--input-dir",
        type=Path,
        help="a GPU job input folder prepared by the flow (exact folder name)",
    )
    parser.add_argument("--instance-count", type=int, help="nodes (overrides settings)")
    parser.add_argument("--gpus-per-node", type=int, help="MPI ranks per node (overrides settings)")
    parser.add_argument("--compute", action="store_true", help="print the cluster spec instead")
    parser.add_argument("-o", "--output", type=Path, help="write YAML here")
    args = parser.parse_args(argv)
    if not args.compute and not args.video:
        parser.error("VIDEO is required unless --compute is given")
    return args


def render(args: argparse.Namespace, settings: RestyleSettings) -> str:
    """The YAML text the command prints (pure apart from staging the code snapshot)."""
    overrides = {
        key: value
        for key, value in (
            ("instance_count", args.instance_count),
            ("gpus_per_node", args.gpus_per_node),
        )
        if value is not None
    }
    azureml = settings.azureml.model_copy(update=overrides)
    if args.compute:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "compute.yaml"
            load_compute_spec(azureml).dump(out)
            return out.read_text()
    blob = PurePosixPath(args.video)
    style = args.style or (blob.parent.name if blob.parent.name else settings.default_style)
    with tempfile.TemporaryDirectory() as tmp:
        input_dir = args.input_dir
        if input_dir is None:
            # Stand-in for the prepared folder: the key digest is taken over what is here.
            input_dir = Path(tmp) / "input"
            input_dir.mkdir()
            (input_dir / "source.txt").write_text(f"{style}\n{args.video}\n")
        job = GpuJob(
            module="gpu.stylize",
            input_dir=input_dir,
            output_dir=Path(tmp) / "output",
            args=settings.compute.stylize_args(),
            name=f"stylize {style}/{blob.name}",
        )
        body = render_job_yaml(job, azureml, settings.work_dir / "azureml-code")
    ranks = azureml.instance_count * azureml.gpus_per_node
    header = (
        f"# Azure ML job for {args.video} in style {style!r}: {azureml.instance_count} node(s) x "
        f"{azureml.gpus_per_node} GPU rank(s) = {ranks} rank(s) on {azureml.compute!r}.\n"
        "# Rendered offline; the backend gives each submission its own name (-a<attempt>-<id>).\n"
    )
    return header + body


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    text = render(args, RestyleSettings())
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

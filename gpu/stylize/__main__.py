"""``python -m gpu.stylize``: run the GPU job on this rank."""

from gpu.stylize.cli import get_args_parser, main

main(get_args_parser().parse_args())

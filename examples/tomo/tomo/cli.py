"""`python -m tomo STEP --slice N`: the commands the pipeline file lists."""

from __future__ import annotations

import argparse

from tomo.filters import WINDOWS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="tomo", description="Reference tomography pipeline (examples/tomo)."
    )
    sub = parser.add_subparsers(dest="step", required=True)
    for step, text in (
        ("acquire", "simulate and correct one slice's scan"),
        ("filter", "ramp-filter one slice's sinogram"),
        ("reconstruct", "back-project one slice with the calibrated centre"),
    ):
        command = sub.add_parser(step, help=text)
        command.add_argument("--slice", type=int, required=True)
        if step == "filter":
            command.add_argument("--window", choices=WINDOWS, default="shepp-logan")
        if step == "reconstruct":
            command.add_argument("--device", help="OpenCL device to use: part of its name or its platform's")
    sub.add_parser("calibrate", help="estimate the centre of rotation from all slices")
    args = parser.parse_args(argv)

    if args.step == "acquire":
        from tomo.scan import acquire

        acquire(args.slice)
    elif args.step == "filter":
        from tomo.filters import filter_slice

        filter_slice(args.slice, args.window)
    elif args.step == "calibrate":
        from tomo.calibrate import calibrate

        calibrate()
    else:
        from tomo.reconstruct import reconstruct

        reconstruct(args.slice, args.device)

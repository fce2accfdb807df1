"""``fxq bench TARGET``: the user's own model, quantized by ``fxq.quantize`` with its defaults, against its float
form (``fxq.benchmark``): latency, size and output SQNR. TARGET and inputs are given as for ``fxq dump``."""

from __future__ import annotations

import argparse

from fxq.tools.dump import calibration_batches, example_inputs, load_target

import fxq
from fxq.converted import ConvertedGraphModule
from fxq.errors import ConfigError


def run_target_bench(args: argparse.Namespace) -> int:
    model = load_target(args.target)
    if isinstance(model, ConvertedGraphModule):
        raise ConfigError(f"fxq bench TARGET takes the float model (package.module:factory); {args.target!r} is "
                          "already quantized")
    example = example_inputs(args.input_shape, args.example_inputs, args.input_dtype)
    if example is None:
        raise ConfigError("fxq bench TARGET needs example inputs: --input-shape 1,3,224,224 (inputs separated by "
                          "';') or --example-inputs FILE.pt")
    quantized = fxq.quantize(model, example, calibration_batches(args.calibration, example), backend=args.backend,
                             capture=args.capture)
    print(str(fxq.report_of(quantized)).splitlines()[0])  # the counts and sizes line
    print(fxq.benchmark(model, quantized, example, threads=args.threads, rounds=args.rounds or 20))
    return 0

"""The ``fxq`` command: one subcommand per tool in ``fxq.tools``."""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from fxq.errors import FxqError

# torch 2.13 warns on every quantized tensor it creates that the API is deprecated (docs/architecture.md, "Known
# risks"); the commands print tables a person reads, so the repeated notice is left out of them.
_TORCH_DEPRECATION = "torch.quantize_per_tensor, torch.quantize_per_channel and other quantized tensor"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fxq", description="FX graph-mode quantization for PyTorch")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="train a small CNN on the digits data set, quantize it, report")
    demo.add_argument("--epochs", type=int, default=8, help="training epochs for the float model")
    demo.add_argument("--seed", type=int, default=0)
    bench = commands.add_parser("bench", help="int8 latency/size/accuracy vs fp32 and torch.ao, in one run; or "
                                              "your model: fxq bench package.module:factory --input-shape ...")
    bench.add_argument("target", nargs="?", help="your model (package.module:factory), quantized with fxq.quantize's "
                                                 "defaults and measured against its float form")
    from fxq.tools.dump import add_input_arguments

    add_input_arguments(bench)
    bench.add_argument("--calibration", help="with TARGET: number of random calibration batches, or a .pt file "
                                             "with a list of batches")
    bench.add_argument("--backend", default="x86", help="with TARGET: reference, x86 or qnnpack")
    bench.add_argument("--capture", choices=("fx", "export", "auto"), default="auto", help="with TARGET")
    bench.add_argument("--models", default="resnet18,mobilenet_v2,bert,digits",
                       help="comma-separated: resnet18, mobilenet_v2, bert, digits, hf_bert (needs transformers)")
    bench.add_argument("--threads", type=int, default=2)
    bench.add_argument("--rounds", type=int, help="timed rounds per variant (median reported; default 20, 3 with --llm)")
    bench.add_argument("--compile", action="store_true", help="measure prepare+convert time on generated graphs")
    bench.add_argument("--dump", action="store_true", help="measure the fxq dump command on a 2,000-node graph")
    bench.add_argument("--dynamic", action="store_true",
                       help="fp32 vs dynamic int8 on BERT-base and MiniLM; decode-step Linears incl. weight-only int4")
    bench.add_argument("--llm", action="store_true",
                       help="decode speed, memory and logits SQNR of a Llama-shaped decoder: fp32, fxq and torchao "
                            "int8/int4")
    bench.add_argument("--minilm", action="store_true",
                       help="static int8 by defaults vs fp32 and dynamic int8 on the real all-MiniLM-L6-v2")
    bench.add_argument("--qat", action="store_true",
                       help="4-bit QAT on two digits CNNs (fxq vs torch.ao vs static PTQ), then MiniLM QAT + distillation")
    bench.add_argument("--distributed", action="store_true",
                       help="calibration wall time of ResNet-18 on 256 images, 1 vs 2 processes (one thread each)")
    bench.add_argument("--fuzz", type=int, metavar="N", help="quantize N seeded random models per backend, check")
    bench.add_argument("--backends", default="reference,x86,qnnpack", help="with --fuzz: comma-separated backends")
    bench.add_argument("--seed", type=int, default=0, help="with --fuzz: the first seed")
    bench.add_argument("--jobs", type=int, default=min(os.cpu_count() or 1, 4),
                       help="with --fuzz: processes checking models side by side (default: the cores, up to 4)")
    dump = commands.add_parser("dump", help="what every node became at a pipeline stage, and why")
    from fxq.tools.dump import add_arguments

    add_arguments(dump)
    tune = commands.add_parser("tune", help="the fastest per-layer precision plan within an accuracy budget")
    from fxq.tools.tune import add_arguments as add_tune_arguments

    add_tune_arguments(tune)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message=_TORCH_DEPRECATION, category=UserWarning)
    warnings.filterwarnings("ignore", message="TypedStorage is deprecated", category=UserWarning)  # copying int8
    try:
        return _run(args)
    except FxqError as err:  # a user mistake with its fix in the message: no traceback
        print(f"fxq {args.command}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (``fxq dump ... | head``): not an error
        sys.stderr.close()
        return 0


def _run(args: argparse.Namespace) -> int:
    if args.command == "bench":
        from fxq.tools.bench import run_bench, run_compile_bench, run_dump_bench, run_dynamic_bench

        if args.target:
            from fxq.tools.bench_target import run_target_bench

            return run_target_bench(args)
        if args.fuzz is not None:
            from fxq.tools.fuzz import run_fuzz

            return run_fuzz(args.fuzz, args.backends.split(","), seed=args.seed, jobs=args.jobs)
        if args.llm:
            from fxq.tools.bench_llm import run_llm_bench

            return run_llm_bench(threads=args.threads, rounds=args.rounds or 3)
        rounds = args.rounds or 20
        if args.dynamic:
            return run_dynamic_bench(threads=args.threads, rounds=rounds)
        if args.distributed:
            from fxq.tools.bench_distributed import run_distributed_bench

            return run_distributed_bench(threads=1)
        if args.qat:
            from fxq.tools.bench_qat import run_qat_bench

            return run_qat_bench(threads=args.threads)
        if args.minilm:
            from fxq.tools.bench_minilm import run_minilm_bench

            return run_minilm_bench(threads=args.threads, rounds=rounds)
        if args.dump:
            return run_dump_bench()
        if args.compile:
            return run_compile_bench()
        return run_bench(args.models.split(","), threads=args.threads, rounds=rounds)
    if args.command == "dump":
        from fxq.tools.dump import run

        return run(args)
    if args.command == "tune":
        from fxq.tools.tune import run as run_tune

        return run_tune(args)
    if args.command == "demo":
        from fxq.tools.demo import run_demo

        return run_demo(epochs=args.epochs, seed=args.seed)
    return 2


if __name__ == "__main__":
    sys.exit(main())

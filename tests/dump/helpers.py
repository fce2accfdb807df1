"""Running ``fxq dump`` in-process: the command's own argument parser, so tests exercise what users type."""

import argparse
import warnings

from fxq.tools.dump import add_arguments, build_dump, render

from fxq.errors import FxqWarning

SHAPES = {"mlp": "4,64", "resnet": "2,3,16,16", "mobilenet": "2,3,16,16", "transformer": "2,16,64",
          "mixed": "2,3,16,16", "untraceable": "4,32"}
FACTORIES = {"mlp": "MLP", "resnet": "ResNetish", "mobilenet": "MobileNetV2ish", "transformer": "TransformerBlock",
             "mixed": "MixedForms", "untraceable": "WithUntraceable"}


def dump_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def dump(name: str, *options: str):
    """build_dump for test model ``name`` with the given command-line options."""
    args = dump_args(f"tests.models:{FACTORIES[name]}", "--input-shape", SHAPES[name], *options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FxqWarning)
        return build_dump(args)


def dump_text(name: str, *options: str, fmt: str = "text") -> str:
    return render(dump(name, *options), fmt)

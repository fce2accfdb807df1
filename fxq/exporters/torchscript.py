"""``fxq.export(qm, path, format="torchscript" | "lite")``: the converted model as a frozen TorchScript module,
which plain ``torch.jit.load`` (or, for "lite", the mobile interpreter's ``_load_for_lite_interpreter``) runs
without fxq installed.

It is the module the "torchscript" runtime runs (``fxq.runtime.frozen_script``): weights and qparams are
constants, and its inputs and outputs are flat tensors (a model captured with ``torch.export`` returns a tuple
where fxq's GraphModule returns, say, a Hugging Face output object). The export is checked against the
GraphModule on the example inputs before it is written, and loaded back after: where it reproduces the model
only under another quantized engine than this process's (a qnnpack model on x86), a warning names the engine
to set before loading; where it reproduces it under none (torch writes packed weights by unpacking them, which
is wrong for qnnpack's transposed convolutions), the file is removed and export raises.

"lite" is not passed through ``torch.utils.mobile_optimizer.optimize_for_mobile``: that needs XNNPACK, which
torch's x86 CPU wheels lack; run it on a build that has it if the target is a phone.
"""

from __future__ import annotations

import os
import warnings

import torch
from torch.fx import GraphModule

from fxq.converted import ConvertedGraphModule
from fxq.errors import ConfigError
from fxq.input_guard import diagnose
from fxq.nn.quantized.engine import using_engine
from fxq.runtime import call_like, compile_error, difference, example_inputs_of, frozen_script


def export(qm: GraphModule, path: str | os.PathLike, example_inputs=None, format: str = "torchscript") -> None:
    """Write ``qm`` to ``path`` as a frozen TorchScript module ("torchscript") or for the lite interpreter
    ("lite"); see the module docstring.

    Raises:
        ConfigError: ``qm`` is not a converted model, TorchScript cannot compile it (the message says why), the
            compiled module computes other values than ``qm`` on ``example_inputs``, or the written file, loaded
            back, does so under every quantized engine (the file is removed).
        InputError: ``example_inputs`` are not inputs ``qm`` takes.
    """
    if not isinstance(qm, ConvertedGraphModule):
        raise ConfigError(f"fxq.export(format={format!r}) takes a model from fxq.convert or fxq.quantize, got a "
                          f"{type(qm).__name__}")
    try:
        module = frozen_script(qm)
    except Exception as err:
        raise ConfigError(f"TorchScript cannot compile this model, so it cannot be exported as {format!r} "
                          f"({compile_error(err)}); export it as 'onnx' or 'pt2' instead") from err
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    inputs = tuple(example_inputs) if example_inputs is not None else example_inputs_of(qm)
    if inputs is not None:
        try:
            problem = difference(qm, call_like(qm, module), inputs)
        except Exception as err:
            explained = diagnose(qm, inputs, {}, err)
            if explained is None:
                raise
            raise explained from err
        if problem:
            raise ConfigError(f"the TorchScript module computes other values than the model: {problem}")
    if format == "lite":
        module._save_for_lite_interpreter(os.fspath(path))
    else:
        torch.jit.save(module, os.fspath(path))
        if inputs is not None:
            _check_loading_engine(qm, path, inputs)


def _check_loading_engine(qm: GraphModule, path, inputs: tuple) -> None:
    """Warn where the written file, loaded under this process's quantized engine, computes other values than
    ``qm``: loading re-packs the weights for the engine current at that moment (a qnnpack model loaded under
    x86 runs fbgemm's kernels on them), and say which engine reproduces ``qm``. Where none does, remove the file
    and raise: torch writes packed weights by unpacking them, and some kernels' unpacking is wrong (qnnpack's
    int8 transposed convolutions, which fxq runs on x86 because onednn's are wrong in memory already)."""
    current = torch.backends.quantized.engine
    if _loads_exactly(qm, path, inputs):
        return
    for engine in torch.backends.quantized.supported_engines:
        if engine not in ("none", current):
            with using_engine(engine):
                if _loads_exactly(qm, path, inputs):
                    warnings.warn(f"{os.fspath(path)} computes the model's values only when loaded with "
                                  f"torch.backends.quantized.engine = {engine!r} (loading re-packs the weights for "
                                  f"the current engine; under {current!r} they run other kernels): set it before "
                                  "torch.jit.load", stacklevel=3)
                    return
    os.remove(path)
    raise ConfigError("the TorchScript file, loaded back, computes other values than the model under every "
                      "quantized engine of this torch build (torch saves int8 kernels' packed weights by unpacking "
                      "them, and some unpack wrongly: qnnpack's transposed convolutions, which fxq runs on x86); "
                      "nothing was written. Export as 'onnx' or 'pt2', or keep the model with fxq.save")


def _loads_exactly(qm: GraphModule, path, inputs: tuple) -> bool:
    """Whether the file, loaded under the current engine, computes what ``qm`` does (a model that the engine
    cannot run at all does not)."""
    try:
        return difference(qm, call_like(qm, torch.jit.load(os.fspath(path))), inputs) is None
    except RuntimeError:  # e.g. qnnpack refuses the x86 model's sigmoid output qparams
        return False

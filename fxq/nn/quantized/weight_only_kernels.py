"""fxq's own int4 and int8 weight-only matmuls for x86 CPUs with AVX2 and FMA (``weight_only_kernels.c``), built
with the machine's C compiler on first use.

Why: decoding is one activation row per call, so a weight-only Linear is as fast as its kernel reads its weights.
torch's int4 CPU kernel (``aten._weight_int4pack_mm_for_cpu``) widens them to bfloat16 and reaches about 13 G
weights/s on 2 AVX2 cores (AMD EPYC), half of fbgemm's dynamic int8 speed per weight; torch has no fast int8
weight-only CPU kernel (``aten._weight_int8pack_mm`` is slower than fp32), so an int8 weight-only Linear used to
expand its weight per call. These kernels round each activation row to 8 bits per weight group and sum products
in integers: int4 about 2x faster than torch's, int8 about 60x faster than expanding (``fxq bench --dynamic`` and
``--llm`` time them). For many rows at once (a long prompt, an encoder's batch) a float matmul on the weight
expanded once per call can be faster, and ``linear`` does that.

The compiled library goes to ``FXQ_CACHE_DIR`` (default ``~/.cache/fxq``), named by a hash of the source and the
flags, and is checked against a float computation of the same products before use. Where there is no compiler,
no AVX2/FMA, or the build or check fails (which warns), ``available()`` is False: int4 Linears use torch's
kernel, int8 ones expand their weight. ``FXQ_NATIVE_KERNELS=0`` turns the kernels off.

The kernels are the operators ``torch.ops.fxq.int4_linear`` and ``int8_linear``, so ``torch.jit.trace`` and
``torch.compile`` see them, and they have gradients for their input and bias.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from fxq import cpu

SOURCE = Path(__file__).with_name("weight_only_kernels.c")
FLAGS = ("-O3", "-mavx2", "-mfma", "-fopenmp", "-shared", "-fPIC")
INT4_GROUPS = (32, 64, 128, 256)  # int4 sums up to 256 products in 16 bits, which cannot overflow
FEWEST_EXPANDED_ROWS, WEIGHTS_PER_EXPANDED_ROW = 48, 32768  # when a float matmul beats the kernel: ``_expands``


def available() -> bool:
    """Whether the kernels are built, loaded and checked on this machine."""
    return _library() is not None


def applies(bits: int, group_size: int, in_features: int) -> bool:
    """Whether a kernel takes this weight: int4 groups of 32-256 padding the input to whole chunks of 64 inputs,
    int8 groups of a multiple of 32."""
    padded = -(-in_features // group_size) * group_size
    fits = group_size in INT4_GROUPS and padded % 64 == 0 if bits == 4 else bits == 8 and group_size % 32 == 0
    return fits and available()


def linear(bits: int, x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, group_size: int,
           in_features: int, bias: torch.Tensor | None) -> torch.Tensor:
    """``x @ W.T + bias`` for float32 ``x`` (..., in_features) and the weight ``W`` held as ``qweight`` and
    ``scale`` (out, groups): int4 two levels per byte (out, padded in / 2; low nibble first, offset 8), int8 one
    signed level per byte (out, padded in)."""
    op = torch.ops.fxq.int4_linear if bits == 4 else torch.ops.fxq.int8_linear
    y = op(x.reshape(-1, in_features), qweight, scale, group_size, bias)
    return y.reshape(*x.shape[:-1], qweight.shape[0])


def stored(bits: int, levels: torch.Tensor) -> torch.Tensor:
    """Signed levels (out, padded in) as a kernel reads them: int8 as they are, int4 two per byte (low nibble
    first, each with an offset of 8)."""
    if bits == 8:
        return levels
    nibbles = (levels + 8).to(torch.uint8)
    return nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)


def levels(bits: int, qweight: torch.Tensor) -> torch.Tensor:
    """The signed levels (out, padded in) of a stored weight (``stored``'s inverse)."""
    if bits == 8:
        return qweight
    return torch.stack([qweight & 0x0F, qweight >> 4], dim=2).reshape(qweight.shape[0], -1).to(torch.int8) - 8


def random_weight(bits: int, out_features: int, padded: int, group_size: int,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A stored weight of uniformly random levels and its scales (0.1 to 1.1): the load-time check's data, and
    the tests'."""
    values = torch.randint(-2 ** (bits - 1), 2 ** (bits - 1), (out_features, padded), generator=generator,
                           dtype=torch.int8)
    scale = torch.rand(out_features, padded // group_size, generator=generator) + 0.1
    return stored(bits, values), scale


def expand(bits: int, qweight: torch.Tensor, scale: torch.Tensor, group_size: int,
           in_features: int) -> torch.Tensor:
    """The float32 weight (out, in_features), in torch ops: needs no kernel."""
    grouped = levels(bits, qweight).float().reshape(qweight.shape[0], -1, group_size) * scale.unsqueeze(2)
    return grouped.reshape(qweight.shape[0], -1)[:, :in_features]


def dequantize(bits: int, qweight: torch.Tensor, scale: torch.Tensor, group_size: int,
               in_features: int) -> torch.Tensor:
    """``expand``, int4 through the library (about 2x faster on a large weight); the library must be loaded."""
    if bits == 8:
        return expand(bits, qweight, scale, group_size, in_features)
    out = torch.empty(qweight.shape[0], in_features)
    _library().fxq_int4_dequantize(qweight.data_ptr(), scale.data_ptr(), qweight.shape[0], in_features,
                                   qweight.shape[1] * 2, group_size, out.data_ptr(), torch.get_num_threads())
    return out


def reference(bits: int, x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, group_size: int,
              bias: torch.Tensor | None) -> torch.Tensor:
    """What a kernel computes: activations rounded to 8 bits per group as the kernel rounds them (in float32),
    then their product with the weight in float64. For the check at load time and the tests."""
    rows, in_features = x.shape
    weight = levels(bits, qweight).double()
    padded = weight.shape[1]
    grouped = F.pad(x.float(), (0, padded - in_features)).reshape(rows, -1, group_size)
    largest = grouped.abs().amax(-1, keepdim=True)  # as the kernel: float32 step and inverse step
    activations = torch.round(grouped * torch.where(largest > 0, 127 / largest, 0))
    activations = (activations.double() * (largest / 127).double()).reshape(rows, padded)
    weight = (weight.reshape(weight.shape[0], -1, group_size) * scale.double()[:, :, None]).reshape(-1, padded)
    y = activations @ weight.t()
    return y if bias is None else y + bias.double()


def _run(bits: int, x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, group_size: int,
         bias: torch.Tensor | None) -> torch.Tensor:
    x, qweight, scale = x.contiguous().float(), qweight.contiguous(), scale.contiguous().float()
    bias = None if bias is None else bias.contiguous().float()
    rows, in_features = x.shape
    padded = qweight.shape[1] * (2 if bits == 4 else 1)
    if _expands(rows, qweight.shape[0] * padded):
        return F.linear(x, dequantize(bits, qweight, scale, group_size, in_features), bias)
    y = torch.empty(rows, qweight.shape[0])
    if rows == 0:
        return y
    kernel = _library().fxq_int4_linear if bits == 4 else _library().fxq_int8_linear
    failed = kernel(x.data_ptr(), rows, in_features, qweight.data_ptr(), scale.data_ptr(), qweight.shape[0], padded,
                    group_size, None if bias is None else bias.data_ptr(), y.data_ptr(), torch.get_num_threads())
    if failed:
        raise MemoryError(f"fxq's int{bits} matmul could not allocate its {rows} x {in_features} activation buffer")
    return y


def _expands(rows: int, weights: int) -> bool:
    """Whether expanding the weight and a float matmul beats the kernel. Measured for int4 on 2 AVX2 cores (AMD
    EPYC): the kernel sums about 2x slower per product than the float matmul on a weight that fits in cache, so
    a 384 x 1536 weight is better expanded past about 48 rows; a large weight's expansion costs more (page faults
    on a fresh 46 MB buffer for 5632 x 2048, 26 ms) and the kernel keeps up with the float matmul there, so that
    one is better expanded only past 350-1000 rows."""
    return rows > FEWEST_EXPANDED_ROWS and rows * WEIGHTS_PER_EXPANDED_ROW > weights


def _shape(x, qweight, scale, group_size, bias):
    return x.new_empty(x.shape[0], qweight.shape[0], dtype=torch.float32)


def _remember_weight(bits: int):
    def setup(ctx, inputs, output) -> None:
        x, qweight, scale, group_size, bias = inputs
        ctx.save_for_backward(qweight, scale)
        ctx.bits, ctx.group_size, ctx.in_features, ctx.has_bias = bits, group_size, x.shape[1], bias is not None
    return setup


def _backward(ctx, grad: torch.Tensor):
    """Gradients for the activations (through the quantized weight; the 8-bit rounding of the activations passes
    them straight through) and the bias, so a frozen quantized model can train adapters or be differentiated."""
    qweight, scale = ctx.saved_tensors
    grad_x = grad_bias = None
    if ctx.needs_input_grad[0]:
        grad_x = grad @ dequantize(ctx.bits, qweight, scale, ctx.group_size, ctx.in_features)
    if ctx.has_bias and ctx.needs_input_grad[4]:
        grad_bias = grad.sum(0)
    return grad_x, None, None, None, grad_bias


_OPS = torch.library.Library("fxq", "FRAGMENT")
for _bits in (4, 8):
    _name = f"int{_bits}_linear"
    _OPS.define(f"{_name}(Tensor x, Tensor qweight, Tensor scale, int group_size, Tensor? bias) -> Tensor")
    _OPS.impl(_name, functools.partial(_run, _bits), "CPU")
    torch.library.register_fake(f"fxq::{_name}", _shape, lib=_OPS)
    torch.library.register_autograd(f"fxq::{_name}", _backward, setup_context=_remember_weight(_bits), lib=_OPS)


@functools.cache
def _library() -> ctypes.CDLL | None:
    if os.environ.get("FXQ_NATIVE_KERNELS", "1") == "0" or not {"avx2", "fma"} <= cpu.flags():
        return None
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    try:
        library = ctypes.CDLL(str(_build(compiler)))
    except (OSError, subprocess.CalledProcessError) as err:
        detail = getattr(err, "stderr", None) or str(err)
        warnings.warn(f"fxq could not build its weight-only matmuls with {compiler} ({detail.strip()[-300:]}); "
                      "int4 Linears use torch's int4 kernel, about 2x slower at decoding, and int8 weight-only "
                      "Linears expand their weight per call", stacklevel=3)
        return None
    pointer, size = ctypes.c_void_p, ctypes.c_int64
    for kernel in (library.fxq_int4_linear, library.fxq_int8_linear):
        kernel.restype = ctypes.c_int
        kernel.argtypes = [pointer, size, size, pointer, pointer, size, size, size, pointer, pointer, ctypes.c_int]
    library.fxq_int4_dequantize.restype = None
    library.fxq_int4_dequantize.argtypes = [pointer, pointer, size, size, size, size, pointer, ctypes.c_int]
    if not _agrees(library):
        warnings.warn("fxq's weight-only matmuls computed other values than their float reference on this "
                      "machine; int4 Linears use torch's int4 kernel, int8 ones expand their weight", stacklevel=3)
        return None
    return library


def _build(compiler: str) -> Path:
    """The compiled library, built unless the cache already holds this source built with these flags."""
    source = SOURCE.read_bytes()
    digest = hashlib.sha256(source + " ".join((compiler, *FLAGS)).encode()).hexdigest()[:16]
    try:
        directory = Path(os.environ.get("FXQ_CACHE_DIR") or Path.home() / ".cache" / "fxq")
        directory.mkdir(parents=True, exist_ok=True)
    except (OSError, RuntimeError):  # not writable, or no home directory
        directory = Path(tempfile.mkdtemp(prefix="fxq-"))
    target = directory / f"weight_only_kernels-{digest}.so"
    if not target.exists():
        fd, partial = tempfile.mkstemp(dir=directory, suffix=".so")  # concurrent builds each write their own file
        os.close(fd)
        try:
            subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", partial], check=True, capture_output=True,
                           text=True, timeout=120)
            os.replace(partial, target)
        finally:
            if os.path.exists(partial):
                os.remove(partial)
    return target


def _agrees(library: ctypes.CDLL) -> bool:
    """Each kernel against ``reference`` on random data of awkward sizes (a short last tile, a padded last group,
    a bias), int4 in both of its ways of summing groups."""
    generator = torch.Generator().manual_seed(0)
    rows, out_features, padded = 3, 23, 256
    for bits, group, in_features in ((4, 64, 200), (4, 32, 250), (8, 32, 250)):
        x = torch.randn(rows, in_features, generator=generator)
        qweight, scale = random_weight(bits, out_features, padded, group, generator)
        bias = torch.randn(out_features, generator=generator)
        y = torch.empty(rows, out_features)
        kernel = library.fxq_int4_linear if bits == 4 else library.fxq_int8_linear
        kernel(x.data_ptr(), rows, in_features, qweight.data_ptr(), scale.data_ptr(), out_features, padded, group,
               bias.data_ptr(), y.data_ptr(), 1)
        expected = reference(bits, x, qweight, scale, group, bias)
        if not (y.double() - expected).abs().max() <= 1e-4 * expected.abs().max():
            return False
    return True

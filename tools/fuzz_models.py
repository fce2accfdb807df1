"""Random models for fxq's fuzzer (``fxq bench --fuzz``): seeded programs over a typed pool of values.

A model is generated as Python source (an ``__init__`` creating its modules, a ``forward`` written op by op)
and ``exec``-ed into a class, so torch.fx sees the module, functional, torch.* and Tensor-method spellings a
person writes, and a failing case prints as a readable script. The generator tracks each value's shape,
whether it is contiguous and which values share its storage, and draws only ops valid for the value it picked.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

MODEL_CLASS = "FuzzModel"
_HEADER = "import torch\nimport torch.nn.functional as F\nfrom torch import nn\n"


@dataclass(frozen=True)
class Value:
    """A tensor in the generated forward: its shape (batch first), storage group and layout."""

    name: str
    shape: tuple[int, ...]
    alias: str  # values sharing storage share this: in place is only for storage nothing else reads
    contiguous: bool = True  # ``view`` needs it; permutes and ops on permuted values lose it


@dataclass(frozen=True)
class Stmt:
    """One op of the forward: ``code`` formats its inputs ({0}, {1}) and its result ({out}) into source."""

    kind: str  # "concept:spelling", the unit of the vocabulary coverage
    code: str
    inputs: tuple[str, ...]
    out: Value
    attrs: tuple[str, ...] = ()  # submodules / parameters the code reads


@dataclass
class Program:
    """A generated model: statements plus the constructor lines of the submodules they use."""

    input: Value
    stmts: list[Stmt]
    modules: dict[str, tuple[str, ...]]  # attribute -> lines of ``__init__`` that create it
    outputs: tuple[str, ...]  # every value no op reads, so no generated op is dead code

    def source(self) -> str:
        """The model as a Python module defining ``FuzzModel``; only submodules still used are created."""
        used = {attr for stmt in self.stmts for attr in stmt.attrs}
        init = [line for attr, lines in self.modules.items() if attr in used for line in lines]
        forward = []
        for stmt in self.stmts:
            forward += stmt.code.format(*stmt.inputs, out=stmt.out.name).split("\n")
        body = "\n".join(f"        {line}" for line in ["super().__init__()"] + init)
        steps = "\n".join(f"        {line}" for line in forward + [f"return {', '.join(self.outputs)}"])
        return (f"{_HEADER}\n\nclass {MODEL_CLASS}(nn.Module):\n    def __init__(self):\n{body}\n\n"
                f"    def forward(self, {self.input.name}):\n{steps}\n")


@dataclass
class FuzzCase:
    """A seed's model with its data: example inputs, 8 calibration batches and a held-out evaluation batch."""

    seed: int
    program: Program
    model: torch.nn.Module
    example_inputs: tuple
    calibration: list[tuple]
    evaluation: tuple
    input_spec: str  # how the inputs were drawn, as Python (the reproducer re-draws them the same way)
    data_seed: int
    ops: list[str] = field(default_factory=list)

    @property
    def source(self) -> str:
        return self.program.source()


def instantiate(program: Program) -> torch.nn.Module:
    """Execute the program's source and build its model in eval mode, leaving the global RNG as it was."""
    namespace: dict = {}
    exec(compile(program.source(), "<fuzz model>", "exec"), namespace)
    with torch.random.fork_rng(devices=[]):
        return namespace[MODEL_CLASS]().eval()


def draw_inputs(input_spec: str, shape: tuple[int, ...], seed: int, count: int) -> list[torch.Tensor]:
    """``count`` batches drawn by ``input_spec`` (an expression over ``g``, the generator, and ``shape``)."""
    g = torch.Generator().manual_seed(seed)
    return [eval(input_spec, {"torch": torch, "g": g, "shape": shape}) for _ in range(count)]


_INPUT_SPECS = (  # (weight, spec): mostly centred data, some image-like positive data, some far from zero
    (6, "torch.randn(shape, generator=g)"),
    (3, "torch.rand(shape, generator=g)"),
    (1, "torch.randn(shape, generator=g) * 2 + 3"),
)


def build_model(seed: int, min_ops: int = 5, max_ops: int = 30) -> FuzzCase:
    """The deterministic random model of ``seed``: same seed, same source, weights and data."""
    rng = random.Random(seed)
    gen = _Gen(rng)
    gen.run(rng.randint(min_ops, max_ops))
    program = gen.program()
    spec = rng.choices([s for _, s in _INPUT_SPECS], weights=[w for w, _ in _INPUT_SPECS])[0]
    data_seed = rng.getrandbits(62)
    batches = draw_inputs(spec, program.input.shape, data_seed, 10)
    return FuzzCase(seed, program, instantiate(program), (batches[0],), [(b,) for b in batches[1:9]],
                    (batches[9],), spec, data_seed, [stmt.kind for stmt in program.stmts])


class _Gen:
    """Grows a program: picks a live value, then an op valid for its rank, shape, layout and aliasing."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.stmts: list[Stmt] = []
        self.modules: dict[str, tuple[str, ...]] = {}
        self.shared: dict[str, str] = {}  # constructor -> attribute, so a later identical module may reuse it
        self.count = 0
        rank = rng.choice([4, 4, 4, 3, 2])
        batch = rng.randint(2, 4)
        shape = {4: (batch, rng.choice([3, 4, 8, 16]), *[rng.choice([4, 6, 8, 8, 12, 16])] * 2),
                 3: (batch, rng.choice([4, 8, 16]), rng.choice([8, 16, 32])),
                 2: (batch, rng.choice([8, 16, 32, 64]))}[rank]
        self.input = Value("x", shape, "x")
        self.pool: list[Value] = [self.input]

    def run(self, ops: int) -> None:
        for _ in range(ops * 20):
            if len(self.stmts) >= ops:
                break
            value = self.pool[-1] if self.rng.random() < 0.85 else self.rng.choice(self.pool)
            choices = [(w, fn) for w, ranks, fn in _CATALOG if len(value.shape) in ranks]
            fn = self.rng.choices([fn for _, fn in choices], weights=[w for w, _ in choices])[0]
            fn(self, value)
        if not self.stmts:
            self.emit("relu:torch", "torch.relu({0})", [self.input], self.input.shape)

    def program(self) -> Program:
        read = {name for stmt in self.stmts for name in stmt.inputs}
        return Program(self.input, self.stmts, self.modules,
                       tuple(stmt.out.name for stmt in self.stmts if stmt.out.name not in read))

    def fresh(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def module(self, prefix: str, ctor: str, extra: tuple[str, ...] = (), share=True) -> tuple[str, bool]:
        """A submodule attribute for ``ctor``: sometimes an existing identical one (a module called twice)."""
        if share and ctor in self.shared and self.rng.random() < 0.4:
            return self.shared[ctor], True
        attr = self.fresh(prefix)
        lines = (f"torch.manual_seed({self.rng.randrange(10_000)}); self.{attr} = {ctor}",)
        self.modules[attr] = lines + tuple(line.format(m=f"self.{attr}") for line in extra)
        if share:
            self.shared[ctor] = attr
        return attr, False

    def call_module(self, kind: str, prefix: str, ctor: str, value: Value, shape, extra=(), share=True,
                    alias: bool = False) -> Value:
        attr, reused = self.module(prefix, ctor, extra, share)
        kind += ":shared" if reused else ""
        return self.emit(kind, f"{{out}} = self.{attr}({{0}})", [value], shape, attrs=(attr,),
                         alias=value.alias if alias else None, contiguous=value.contiguous)

    def emit(self, kind: str, code: str, inputs: list[Value], shape, *, attrs=(), alias: str | None = None,
             contiguous: bool | None = None, replaces: Value | None = None) -> Value:
        """Append a statement; ``replaces`` drops a value an in-place op has overwritten from the pool."""
        name = self.fresh("v")
        if contiguous is None:
            contiguous = all(v.contiguous for v in inputs)
        out = Value(name, tuple(shape), alias or name, contiguous)
        if "\n" not in code and not code.startswith("{out} = "):
            code = "{out} = " + code
        self.stmts.append(Stmt(kind, code, tuple(v.name for v in inputs), out, tuple(attrs)))
        if replaces is not None:
            self.pool.remove(replaces)
        self.pool.append(out)
        return out

    def may_mutate(self, value: Value) -> bool:
        """In place only on a tensor no other live value (nor the caller's input) shares storage with."""
        return value.alias != self.input.alias and sum(v.alias == value.alias for v in self.pool) == 1

    def other_like(self, value: Value, same=lambda a, b: a == b) -> Value | None:
        """Another live value whose shape fits ``value``'s (for binary ops, concatenation)."""
        fits = [v for v in self.pool if v is not value and same(v.shape, value.shape)]
        return self.rng.choice(fits) if fits else None

    def constant(self) -> str:
        return repr(self.rng.choice([0.5, 1.5, 2.0, 0.25, 3.0, -1.0]))


# --- element-wise ops of any rank ---------------------------------------------------------------------------

_UNARY = (  # (kind, module constructor or call template); the kind's suffix says module / in place
    ("relu:module", "nn.ReLU()"), ("relu:module_inplace", "nn.ReLU(inplace=True)"),
    ("relu:functional", "F.relu({0})"), ("relu:functional_inplace", "F.relu({0}, inplace=True)"),
    ("relu:torch", "torch.relu({0})"), ("relu:method", "{0}.relu()"), ("relu:method_inplace", "{0}.relu_()"),
    ("relu6:module", "nn.ReLU6()"), ("relu6:functional", "F.relu6({0})"),
    ("hardtanh:module", "nn.Hardtanh(-2.0, 2.0)"), ("hardtanh:functional", "F.hardtanh({0}, -1.0, 1.0)"),
    ("leaky_relu:module", "nn.LeakyReLU(0.1)"),
    ("leaky_relu:functional_inplace", "F.leaky_relu({0}, 0.2, True)"),
    ("elu:module", "nn.ELU()"), ("elu:functional", "F.elu({0})"),
    ("gelu:module", "nn.GELU()"), ("gelu:functional", "F.gelu({0})"),
    ("silu:module", "nn.SiLU()"), ("silu:functional", "F.silu({0})"),
    ("hardswish:module", "nn.Hardswish()"), ("hardswish:module_inplace", "nn.Hardswish(inplace=True)"),
    ("hardswish:functional", "F.hardswish({0})"),
    ("hardsigmoid:module", "nn.Hardsigmoid()"), ("hardsigmoid:functional", "F.hardsigmoid({0})"),
    ("sigmoid:module", "nn.Sigmoid()"), ("sigmoid:torch", "torch.sigmoid({0})"),
    ("sigmoid:method", "{0}.sigmoid()"),
    ("tanh:module", "nn.Tanh()"), ("tanh:torch", "torch.tanh({0})"), ("tanh:method", "{0}.tanh()"),
    ("dropout:module", "nn.Dropout(0.1)"), ("dropout:functional", "F.dropout({0}, 0.1, self.training)"),
    ("identity:module", "nn.Identity()"),
)
_SCALAR = (  # {c} is a constant drawn per use
    ("add:scalar", "{0} + {c}"), ("mul:scalar", "{0} * {c}"), ("sub:scalar", "{0} - {c}"),
    ("sub:scalar_reversed", "{c} - {0}"), ("add:torch_scalar", "torch.add({0}, {c})"),
    ("mul:method_scalar", "{0}.mul({c})"), ("add:scalar_inplace", "{0} += {c}\n{out} = {0}"),
    ("mul:method_inplace_scalar", "{0}.mul_({c})"),
)
_BINARY = (
    ("add:operator", "{0} + {1}"), ("add:torch", "torch.add({0}, {1})"), ("add:method", "{0}.add({1})"),
    ("add:inplace", "{0} += {1}\n{out} = {0}"), ("mul:operator", "{0} * {1}"),
    ("mul:torch", "torch.mul({0}, {1})"),
    ("sub:operator", "{0} - {1}"),
)


def _unary_from(gen: _Gen, value: Value, table) -> Value | None:
    kind, template = gen.rng.choice(table)
    inplace = kind.endswith("inplace") or "inplace_" in kind
    if inplace and not gen.may_mutate(value):
        return None
    alias = kind.split(":")[0] in ("dropout", "identity") or inplace
    template = template.replace("{c}", gen.constant())
    if ":module" in kind:
        return gen.call_module(kind, kind.split(":")[0].replace("_", ""), template, value, value.shape,
                               alias=alias)
    return gen.emit(kind, template, [value], value.shape, alias=value.alias if alias else None,
                    contiguous=value.contiguous, replaces=value if inplace else None)


def _activation(gen: _Gen, value: Value) -> None:
    _unary_from(gen, value, _UNARY)


def _scalar(gen: _Gen, value: Value) -> None:
    _unary_from(gen, value, _SCALAR)


def _softmax(gen: _Gen, value: Value) -> None:
    dim = 1 if len(value.shape) == 4 else -1
    if value.shape[dim] < 2:
        return
    kind, template = gen.rng.choice([("softmax:module", f"nn.Softmax(dim={dim})"),
                                     ("softmax:functional", f"F.softmax({{0}}, dim={dim})"),
                                     ("softmax:method", f"{{0}}.softmax({dim})"),
                                     ("softmax:torch", f"torch.softmax({{0}}, {dim})")])
    if ":module" in kind:
        gen.call_module(kind, "softmax", template, value, value.shape)
    else:
        gen.emit(kind, template, [value], value.shape)


def _branch(gen: _Gen, value: Value) -> Value:
    """A same-shape value computed from ``value`` (a residual branch) when the pool has none to pair with."""
    if len(value.shape) == 4 and gen.rng.random() < 0.6:
        c = value.shape[1]
        ctor = f"nn.Conv2d({c}, {c}, 3, padding=1)"
        return gen.call_module("conv2d:module", "conv", ctor, value, value.shape)
    f = value.shape[-1]
    return gen.call_module("linear:module", "fc", f"nn.Linear({f}, {f})", value, value.shape)


def _binary(gen: _Gen, value: Value) -> None:
    other = gen.other_like(value) or _branch(gen, value)
    kind, template = gen.rng.choice(_BINARY)
    inplace = kind.endswith("inplace") and gen.may_mutate(value)
    if kind.endswith("inplace") and not inplace:
        kind, template = _BINARY[0]
    gen.emit(kind, template, [value, other], value.shape, alias=value.alias if inplace else None,
             replaces=value if inplace else None)


def _gate(gen: _Gen, value: Value) -> None:
    """Squeeze-and-excitation: the value times a per-channel gate, a broadcasting multiply."""
    n, c = value.shape[:2]
    pooled = gen.emit("mean:method_keepdim", "{0}.mean((2, 3), keepdim=True)", [value], (n, c, 1, 1),
                      contiguous=True)
    hidden = gen.call_module("conv2d:module", "conv", f"nn.Conv2d({c}, {c}, 1)", pooled, pooled.shape)
    kind, template = gen.rng.choice([("sigmoid:torch", "torch.sigmoid({0})"), ("hardsigmoid:functional",
                                                                                "F.hardsigmoid({0})")])
    gate = gen.emit(kind, template, [hidden], hidden.shape)
    gen.emit("mul:broadcast", "{0} * {1}", [value, gate], value.shape)


def _cat(gen: _Gen, value: Value) -> None:
    dim = -1 if len(value.shape) == 3 else 1
    axis = dim % len(value.shape)

    def fits(a, b):
        same_rank = len(a) == len(b)
        return same_rank and all(x == y for i, (x, y) in enumerate(zip(a, b, strict=True)) if i != axis)

    other = gen.other_like(value, fits)
    if other is None or other.shape[axis] + value.shape[axis] > 128:
        width = gen.rng.choice([4, 8, 16])
        if len(value.shape) == 4:
            ctor = f"nn.Conv2d({value.shape[1]}, {width}, 1)"
            shape = (value.shape[0], width, *value.shape[2:])
            other = gen.call_module("conv2d:module", "conv", ctor, value, shape)
        else:
            other = gen.call_module("linear:module", "fc", f"nn.Linear({value.shape[-1]}, {width})", value,
                                    (*value.shape[:-1], width))
    shape = list(value.shape)
    shape[axis] += other.shape[axis]
    kind, template = gen.rng.choice([("cat:torch", f"torch.cat([{{0}}, {{1}}], {dim})"),
                                     ("cat:torch_tuple", f"torch.cat(({{1}}, {{0}}), dim={dim})")])
    gen.emit(kind, template, [value, other], shape, contiguous=True)


def _bn_stats(prefix: str = "{m}") -> tuple[str, ...]:
    """Non-trivial batch-norm statistics and affine parameters: fresh ones would make BN an identity."""
    return (f"{prefix}.running_mean.normal_(0, 0.3); {prefix}.running_var.uniform_(0.5, 2.0)",
            f"{prefix}.weight.data.uniform_(0.5, 1.5); {prefix}.bias.data.normal_(0, 0.2)")


def _weight(gen: _Gen, shape: tuple[int, ...], fan_in: int) -> str:
    """A parameter attribute for a functional op's weight, scaled like a module's initial weight."""
    dims = ", ".join(map(str, shape))
    attr, _ = gen.module("w", f"nn.Parameter(torch.randn({dims}) * {1 / math.sqrt(fan_in):.4f})", share=False)
    return attr


def _bias(gen: _Gen, size: int) -> str:
    return _weight(gen, (size,), 100) if gen.rng.random() < 0.7 else ""


# --- 4-d (image) ops ----------------------------------------------------------------------------------------

def _conv_out(size: int, k: int, s: int, p: int) -> int:
    return (size + 2 * p - k) // s + 1


def _conv2d(gen: _Gen, value: Value) -> None:
    n, c, h, w = value.shape
    rng = gen.rng
    k, s = rng.choice([1, 3, 3, 5]), rng.choice([1, 1, 2])
    p = rng.choice([0, k // 2])
    oh, ow = _conv_out(h, k, s, p), _conv_out(w, k, s, p)
    if min(oh, ow) < 1:
        return
    style = rng.random()
    if style < 0.2:
        groups, out = c, c * rng.choice([1, 2])  # depthwise
    elif style < 0.3 and c % 2 == 0:
        groups = rng.choice([g for g in (2, 4) if c % g == 0])
        out = groups * rng.choice([2, 4])
    else:
        groups, out = 1, rng.choice([4, 8, 16, 24, 32])
    shape = (n, out, oh, ow)
    if rng.random() < 0.3:
        weight, bias = _weight(gen, (out, c // groups, k, k), c // groups * k * k), _bias(gen, out)
        args = f"self.{weight}, {'self.' + bias if bias else 'None'}, {s}, {p}, 1, {groups}"
        gen.emit("conv2d:functional", f"F.conv2d({{0}}, {args})", [value], shape, attrs=(weight, bias) if bias
                 else (weight,))
        return
    bias = ", bias=False" if rng.random() < 0.3 else ""
    gen.call_module("conv2d:module", "conv", f"nn.Conv2d({c}, {out}, {k}, stride={s}, padding={p}, "
                    f"groups={groups}{bias})", value, shape)


def _conv_transpose2d(gen: _Gen, value: Value) -> None:
    n, c, h, w = value.shape
    k, s = gen.rng.choice([2, 3, 4]), gen.rng.choice([1, 2])
    p = gen.rng.choice([0, 1]) if k > 2 else 0
    pad_out = gen.rng.choice([0, 1]) if s == 2 else 0
    oh, ow = ((size - 1) * s - 2 * p + k + pad_out for size in (h, w))
    if not 1 <= oh <= 16 or ow < 1:
        return
    out = gen.rng.choice([4, 8, 16])
    gen.call_module("conv_transpose2d:module", "deconv", f"nn.ConvTranspose2d({c}, {out}, {k}, stride={s}, "
                    f"padding={p}, output_padding={pad_out})", value, (n, out, oh, ow))


# Normalizing fewer values divides rounding noise by a tiny standard deviation (a LayerNorm over 4 values of a
# near-constant row is noise, quantized or not): real models normalize dozens of values at least.
_MIN_NORMALIZED = 8


def _norm2d(gen: _Gen, value: Value) -> None:
    n, c, h, w = value.shape
    choice = gen.rng.randrange(5)
    if choice == 0:
        gen.call_module("batch_norm2d:module", "bn", f"nn.BatchNorm2d({c})", value, value.shape, _bn_stats(),
                        False)
    elif choice == 1:
        fits = [g for g in (1, 2, 4, 8) if c % g == 0 and c // g * h * w >= _MIN_NORMALIZED]
        groups = gen.rng.choice(fits or [0])
        if groups:
            gen.call_module("group_norm:module", "gn", f"nn.GroupNorm({groups}, {c})", value, value.shape,
                            share=False)
    elif choice == 2 and h * w >= _MIN_NORMALIZED:
        affine = gen.rng.choice([True, False])
        gen.call_module("instance_norm2d:module", "inorm", f"nn.InstanceNorm2d({c}, affine={affine})", value,
                        value.shape, share=False)
    else:
        _layer_norm(gen, value)


def _layer_norm(gen: _Gen, value: Value) -> None:
    size = value.shape[-1]
    if size < _MIN_NORMALIZED:
        return
    if gen.rng.random() < 0.7:
        gen.call_module("layer_norm:module", "ln", f"nn.LayerNorm({size})", value, value.shape, share=False)
    else:
        gen.emit("layer_norm:functional", f"F.layer_norm({{0}}, ({size},))", [value], value.shape)


def _pool2d(gen: _Gen, value: Value) -> None:
    n, c, h, w = value.shape
    rng = gen.rng
    if rng.random() < 0.35:
        o = rng.choice([o for o in (1, 2) if o <= min(h, w)])
        kind, template = rng.choice([("adaptive_avg_pool2d:module", f"nn.AdaptiveAvgPool2d({o})"),
                                     ("adaptive_avg_pool2d:functional",
                                      f"F.adaptive_avg_pool2d({{0}}, {o})")])
        shape = (n, c, o, o)
    else:
        k = rng.choice([2, 3])
        s, p = rng.choice([1, 2]), rng.choice([0, 1]) if k == 3 else 0
        oh, ow = _conv_out(h, k, s, p), _conv_out(w, k, s, p)
        if min(h, w) < k or min(oh, ow) < 1:
            return
        kind, template = rng.choice([("max_pool2d:module", f"nn.MaxPool2d({k}, {s}, {p})"),
                                     ("max_pool2d:functional", f"F.max_pool2d({{0}}, {k}, {s}, {p})"),
                                     ("avg_pool2d:module", f"nn.AvgPool2d({k}, {s}, {p})"),
                                     ("avg_pool2d:functional", f"F.avg_pool2d({{0}}, {k}, {s}, {p})")])
        shape = (n, c, oh, ow)
    if ":module" in kind:
        gen.call_module(kind, "pool", template, value, shape)
    else:
        gen.emit(kind, template, [value], shape)


def _to_features(gen: _Gen, value: Value) -> None:
    """4-d to 2-d: the flatten spellings of classifier heads, including ``x.view(x.size(0), -1)``."""
    n, c, h, w = value.shape
    if c * h * w > 2048:
        return
    options = [("flatten:torch", "torch.flatten({0}, 1)"), ("flatten:method", "{0}.flatten(1)"),
               ("flatten:module", "nn.Flatten()"), ("reshape:shape", "{0}.reshape({0}.shape[0], -1)"),
               ("mean:method_dims", "{0}.mean((2, 3))")]
    if value.contiguous:
        options += [("view:size", "{0}.view({0}.size(0), -1)"),
                    ("view:literal", f"{{0}}.view(-1, {c * h * w})")]
    kind, template = gen.rng.choice(options)
    shape = (n, c) if kind.startswith("mean") else (n, c * h * w)
    if ":module" in kind:
        gen.call_module(kind, "flatten", template, value, shape, alias=True)
    else:
        gen.emit(kind, template, [value], shape, alias=None if kind.startswith("mean") else value.alias,
                 contiguous=kind.startswith("mean") or value.contiguous)


def _layout4d(gen: _Gen, value: Value) -> None:
    """Permutes, transposes, ``contiguous`` and flattening the spatial dimensions into a sequence."""
    n, c, h, w = value.shape
    options = [("permute:method", "{0}.permute(0, 2, 3, 1)", (n, h, w, c)),
               ("permute:method", "{0}.permute(0, 3, 1, 2)", (n, w, c, h)),
               ("transpose:method", "{0}.transpose(2, 3)", (n, c, w, h)),
               ("flatten:method", "{0}.flatten(2)", (n, c, h * w))]
    if not value.contiguous:
        options.append(("contiguous:method", "{0}.contiguous()", value.shape))
    if value.contiguous:
        options.append(("view:size", f"{{0}}.view({{0}}.size(0), {c}, {h * w})", (n, c, h * w)))
    kind, template, shape = gen.rng.choice(options)
    contiguous = kind == "contiguous:method" or (value.contiguous and kind in ("flatten:method", "view:size"))
    gen.emit(kind, template, [value], shape, alias=value.alias, contiguous=contiguous)


# --- 3-d (sequence) and 2-d (feature) ops -------------------------------------------------------------------

def _linear(gen: _Gen, value: Value) -> None:
    size, out = value.shape[-1], gen.rng.choice([8, 16, 32, 64, value.shape[-1]])
    shape = (*value.shape[:-1], out)
    if gen.rng.random() < 0.3:
        weight, bias = _weight(gen, (out, size), size), _bias(gen, out)
        attrs = (weight, bias) if bias else (weight,)
        gen.emit("linear:functional", f"F.linear({{0}}, self.{weight}{', self.' + bias if bias else ''})",
                 [value], shape, attrs=attrs, contiguous=True)
    else:
        gen.call_module("linear:module", "fc", f"nn.Linear({size}, {out})", value, shape)


def _shared_linear(gen: _Gen, value: Value) -> None:
    """The ``self.fc(torch.relu(self.fc(x)))`` pattern: one Linear called on its own (activated) output."""
    size = value.shape[-1]
    attr, _ = gen.module("fc", f"nn.Linear({size}, {size})", share=False)
    first = gen.emit("linear:module", f"self.{attr}({{0}})", [value], value.shape, attrs=(attr,))
    middle = gen.emit("relu:torch", "torch.relu({0})", [first], value.shape)
    gen.emit("linear:module:shared", f"self.{attr}({{0}})", [middle], value.shape, attrs=(attr,))


def _norm1d(gen: _Gen, value: Value) -> None:
    if gen.rng.random() < 0.5 and value.shape[1] <= 64 and (len(value.shape) == 3 or value.shape[0] > 1):
        gen.call_module("batch_norm1d:module", "bn", f"nn.BatchNorm1d({value.shape[1]})", value, value.shape,
                        _bn_stats(), False)
    else:
        _layer_norm(gen, value)


def _conv1d(gen: _Gen, value: Value) -> None:
    n, c, length = value.shape
    if c > 64:
        return
    k, s = gen.rng.choice([1, 3, 5]), gen.rng.choice([1, 2])
    p = gen.rng.choice([0, k // 2])
    out_len, out = _conv_out(length, k, s, p), gen.rng.choice([4, 8, 16, 32])
    if out_len < 1:
        return
    if gen.rng.random() < 0.3:
        weight, bias = _weight(gen, (out, c, k), c * k), _bias(gen, out)
        args = f"self.{weight}, {'self.' + bias if bias else 'None'}, {s}, {p}"
        gen.emit("conv1d:functional", f"F.conv1d({{0}}, {args})", [value], (n, out, out_len),
                 attrs=(weight, bias) if bias else (weight,))
    else:
        groups = c if gen.rng.random() < 0.2 else 1
        out = c if groups > 1 else out
        gen.call_module("conv1d:module", "conv", f"nn.Conv1d({c}, {out}, {k}, stride={s}, padding={p}, "
                        f"groups={groups})", value, (n, out, out_len))


def _pool1d(gen: _Gen, value: Value) -> None:
    n, c, length = value.shape
    if length < 2:
        return
    kind, template, out_len = gen.rng.choice([("max_pool1d:module", "nn.MaxPool1d(2)", length // 2),
                                              ("avg_pool1d:functional", "F.avg_pool1d({0}, 2)", length // 2),
                                              ("adaptive_avg_pool1d:module", "nn.AdaptiveAvgPool1d(1)", 1)])
    if ":module" in kind:
        gen.call_module(kind, "pool", template, value, (n, c, out_len))
    else:
        gen.emit(kind, template, [value], (n, c, out_len))


def _attention(gen: _Gen, value: Value) -> None:
    """Single-head self-attention over (batch, tokens, features): matmul, scale, softmax, matmul."""
    n, tokens, size = value.shape
    if tokens < 2:
        return
    width = gen.rng.choice([8, 16, 32])
    ctor = f"nn.Linear({size}, {width})"
    q, k, v = (gen.call_module("linear:module", "fc", ctor, value, (n, tokens, width), share=False)
               for _ in range(3))
    kt = gen.emit("transpose:method", "{0}.transpose(-2, -1)", [k], (n, width, tokens), alias=k.alias,
                  contiguous=False)
    kind, template = gen.rng.choice([("matmul:torch", "torch.matmul({0}, {1})"),
                                     ("matmul:operator", "{0} @ {1}"), ("bmm:torch", "torch.bmm({0}, {1})")])
    scores = gen.emit(kind, template, [q, kt], (n, tokens, tokens), contiguous=True)
    scaled = gen.emit("mul:scalar", f"{{0}} * {1 / math.sqrt(width):.4f}", [scores], scores.shape)
    probs = gen.emit("softmax:method", "{0}.softmax(-1)", [scaled], scores.shape)
    kind, template = gen.rng.choice([("matmul:torch", "torch.matmul({0}, {1})"),
                                     ("bmm:torch", "torch.bmm({0}, {1})")])
    gen.emit(kind, template, [probs, v], (n, tokens, width), contiguous=True)


def _layout3d(gen: _Gen, value: Value) -> None:
    """Transposes, and leaving the sequence rank: token mean / first token / flatten, or back to an image."""
    n, a, b = value.shape
    options = [("transpose:method", "{0}.transpose(1, 2)", (n, b, a)),
               ("permute:method", "{0}.permute(0, 2, 1)", (n, b, a)),
               ("mean:method_dim", "{0}.mean(1)", (n, b)), ("select:getitem", "{0}[:, 0]", (n, b))]
    if a * b <= 2048:
        options.append(("flatten:method", "{0}.flatten(1)", (n, a * b)))
    side = math.isqrt(b)
    if side * side == b and side > 1 and a <= 64:
        image = (n, a, side, side)
        options.append(("reshape:shape", f"{{0}}.reshape({{0}}.shape[0], {a}, {side}, {side})", image))
        if value.contiguous:
            options.append(("view:size", f"{{0}}.view({{0}}.size(0), {a}, {side}, {side})", image))
    kind, template, shape = gen.rng.choice(options)
    keeps_layout = value.contiguous and kind in ("flatten:method", "reshape:shape", "view:size")
    contiguous = keeps_layout or kind == "mean:method_dim"
    gen.emit(kind, template, [value], shape, alias=None if kind.startswith("mean") else value.alias,
             contiguous=contiguous)


def _unflatten(gen: _Gen, value: Value) -> None:
    """2-d features back to a sequence or an image, with ``view`` (needs contiguous) or ``reshape``."""
    n, f = value.shape
    splits = [(a, f // a) for a in (2, 4, 8, 16) if f % a == 0 and f // a > 1]
    if not splits:
        return
    a, b = gen.rng.choice(splits)
    side = math.isqrt(b)
    if side * side == b and gen.rng.random() < 0.5:
        kind = "view:literal" if value.contiguous else "reshape:shape"
        method = "view" if value.contiguous else "reshape"
        gen.emit(kind, f"{{0}}.{method}(-1, {a}, {side}, {side})", [value], (n, a, side, side),
                 alias=value.alias)
    elif value.contiguous:
        gen.emit("view:size", f"{{0}}.view({{0}}.size(0), {a}, {b})", [value], (n, a, b), alias=value.alias)
    else:
        gen.emit("reshape:shape", f"{{0}}.reshape({{0}}.shape[0], {a}, {b})", [value], (n, a, b),
                 alias=value.alias)


_CATALOG: tuple[tuple[int, tuple[int, ...], Callable[[_Gen, Value], None]], ...] = (  # (weight, ranks, op)
    (10, (2, 3, 4), _activation), (3, (2, 3, 4), _scalar), (4, (2, 3, 4), _binary), (2, (2, 3, 4), _cat),
    (2, (2, 3, 4), _softmax),
    (8, (4,), _conv2d), (2, (4,), _conv_transpose2d), (4, (4,), _norm2d), (3, (4,), _pool2d),
    (2, (4,), _gate),
    (2, (4,), _to_features), (2, (4,), _layout4d),
    (5, (2, 3), _linear), (1, (2, 3), _shared_linear), (2, (2, 3), _norm1d), (3, (3,), _conv1d),
    (1, (3,), _pool1d),
    (2, (3,), _attention), (2, (3,), _layout3d), (1, (2,), _unflatten),
)

VOCABULARY = tuple(sorted({kind for kind, _ in _UNARY + _SCALAR + _BINARY} | {
    "softmax:module", "softmax:functional", "softmax:method", "softmax:torch", "mul:broadcast",
    "mean:method_keepdim",
    "cat:torch", "cat:torch_tuple", "conv2d:module", "conv2d:module:shared", "conv2d:functional",
    "conv_transpose2d:module", "batch_norm2d:module", "group_norm:module", "instance_norm2d:module",
    "layer_norm:module", "layer_norm:functional", "adaptive_avg_pool2d:module",
    "adaptive_avg_pool2d:functional", "max_pool2d:module", "max_pool2d:functional", "avg_pool2d:module",
    "avg_pool2d:functional", "flatten:torch",
    "flatten:method", "flatten:module", "reshape:shape", "mean:method_dims", "view:size", "view:literal",
    "permute:method", "transpose:method", "contiguous:method", "linear:module", "linear:module:shared",
    "linear:functional", "batch_norm1d:module", "conv1d:module", "conv1d:functional", "max_pool1d:module",
    "avg_pool1d:functional", "adaptive_avg_pool1d:module", "matmul:torch", "matmul:operator", "bmm:torch",
    "mean:method_dim", "select:getitem", "relu:module:shared"}))
"""Every op kind the generator writes (a module called a second time adds ":shared"); 300 seeds cover all."""

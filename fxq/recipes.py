"""Recipes: what fxq does differently for a kind of model, chosen from the graph unless the user names one.

A recipe is data: op concepts that stay float unless the user's mapping says otherwise, and extra passes to run
(after ``insert-observers`` in prepare, before ``lower`` in convert). Other packages add recipes with
``register_recipe`` or the ``fxq.recipes`` entry point group. ``prepare`` resolves ``recipe="auto"`` on the
captured graph and records the choice and the reason in ``prepared.meta["fxq_recipe"]``; ``assign-qconfig``
applies the float concepts only where the user's mapping gave no more specific rule than the global one, so an
explicit rule always wins, and the node's ``qconfig_rule`` names the recipe when the recipe decided.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

from torch.fx import GraphModule

from fxq.annotation import info
from fxq.errors import ConfigError
from fxq.ops import concept_of
from fxq.plugins import load_group
from fxq.rms_norm_scope import is_rms_norm

RECIPE_KEY = "fxq_recipe"
# Not an op concept: what ``float_reason`` reads for every op inside an RMS norm module (``fxq.rms_norm_scope``),
# which graphs spell as pow, mean, rsqrt and mul.
RMS_NORM = "rms_norm"
_CORRECTIONS = frozenset({"record-input-statistics", "bias-correction", "smooth"})


@dataclass(frozen=True)
class Recipe:
    """What a kind of model needs besides the mapping.

    Attributes:
        name: how users ask for it (``recipe="transformer"``).
        float_concepts: op concepts kept float where only the global qconfig (or none) would quantize them,
            each with the reason the dump shows.
        prepare_passes: pass names run after ``insert-observers`` in ``prepare``.
        convert_passes: pass names run before ``lower`` in ``convert``.
    """

    name: str
    float_concepts: tuple[tuple[str, str], ...] = ()
    prepare_passes: tuple[str, ...] = ()
    convert_passes: tuple[str, ...] = ()

    def float_reason(self, concept: str | None, module_type: type | None = None) -> str | None:
        """Why this recipe keeps an op of ``concept`` float (``module_type``: the module the op came from; every
        op of an RMS norm counts as ``RMS_NORM``), or None if it does not."""
        reasons = dict(self.float_concepts)
        if is_rms_norm(module_type) and RMS_NORM in reasons:
            return reasons[RMS_NORM]
        return reasons.get(concept)

    def for_training(self) -> Recipe:
        """This recipe for quantization-aware training: the same float decisions and graph passes, without the
        corrections estimated from calibration statistics (training learns what they estimate, so applied after
        it they would correct twice)."""
        return replace(self, prepare_passes=tuple(p for p in self.prepare_passes if p not in _CORRECTIONS),
                       convert_passes=tuple(p for p in self.convert_passes if p not in _CORRECTIONS))


_RESIDUAL = ("a transformer's residual stream carries a few outlier channels 10-100x the others; one int8 scale "
             "over them leaves the rest a handful of steps (all-MiniLM-L6-v2: mean cosine 0.866 with residual adds "
             "and layer norms int8, 0.992 with them float)")

# In exported transformers, slices split fused projections (Falcon's query/key/value) and the halves of rotary
# embeddings; run in int8 they carry an int8 form into the rotary products and attention, which then round too.
_SLICES = ("slices split fused projections and rotary halves; int8 slices carry rounding into the rotary products "
           "and attention after them (tiny random Falcon: 69.8 dB with slices float, 35.4 dB int8)")

TRANSFORMER = Recipe("transformer", float_concepts=(("add", _RESIDUAL), ("add_relu", _RESIDUAL),
                                                    ("layer_norm", _RESIDUAL), (RMS_NORM, _RESIDUAL),
                                                    ("slice", _SLICES)),
                     prepare_passes=("mask-padding",))
# Bias correction: each conv/linear's mean output error from weight rounding, (W_q - W) E[x], measured on the
# calibration data and taken out of its bias (x86 SQNR: ResNet-18 38.1 -> 43.7 dB, MobileNetV2 39.9 -> 44.8).
CNN = Recipe("cnn", prepare_passes=("record-input-statistics",), convert_passes=("bias-correction",))
NONE = Recipe("none")
RECIPES = {recipe.name: recipe for recipe in (TRANSFORMER, CNN, NONE)}


def register_recipe(recipe: Recipe) -> Recipe:
    """Make ``recipe`` available by name (``prepare(..., recipe="name")``; "auto" chooses among fxq's own).
    Its passes must exist; a name already taken is an error."""
    from fxq.pass_registry import get_pass

    if not isinstance(recipe, Recipe) or not recipe.name or recipe.name == "auto":
        raise ConfigError(f"{recipe!r} is not a fxq.recipes.Recipe with a name other than 'auto'")
    taken = RECIPES.get(recipe.name)
    if taken is not None and taken is not recipe:
        raise ConfigError(f"recipe name {recipe.name!r} is already taken; choose another name")
    for name in (*recipe.prepare_passes, *recipe.convert_passes):
        get_pass(name)
    RECIPES[recipe.name] = recipe
    return recipe



def choose_recipe(gm: GraphModule, requested: str | Recipe) -> tuple[Recipe, str]:
    """The recipe for ``gm`` (a captured graph) and why: the one named, or for "auto" the one the graph's ops
    call for. Chosen before any pass runs, so the whole pipeline is known and checked first. Raises ConfigError
    for an unknown name."""
    if isinstance(requested, Recipe):
        return requested, "given as a Recipe"
    load_group("fxq.recipes", register_recipe)  # at every prepare: a broken recipe plugin is reported, not skipped
    if requested != "auto":
        if requested not in RECIPES:
            raise ConfigError(f"unknown recipe {requested!r}; choose one of 'auto', {', '.join(map(repr, RECIPES))}")
        return RECIPES[requested], "asked for by name"
    modules = dict(gm.named_modules())
    counts = Counter(concept_of(node, modules) for node in gm.graph.nodes if node.op not in ("placeholder", "output"))
    attention = counts["attention"] + min(counts["softmax"], counts["matmul"])
    rms_norms = {info(node).module_path for node in gm.graph.nodes if is_rms_norm(info(node).module_type)}
    norms = counts["layer_norm"] + len(rms_norms)
    convs = sum(counts[name] for name in ("conv1d", "conv2d", "conv3d"))
    if attention and norms:
        return TRANSFORMER, f"{attention} attention op(s) and {norms} layer norm(s)"
    if convs:
        return CNN, f"{convs} convolution(s) and no attention with layer norms"
    return NONE, "neither attention with layer norms nor convolutions"

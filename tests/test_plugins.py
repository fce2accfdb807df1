"""Plugins as pip installs them: a distribution on the path with entry points in the fxq.passes, fxq.backends and
fxq.recipes groups. A plugin that cannot load, clashes with a built-in, needs what no pass provides or carries a
malformed backend table stops prepare before any pass runs, with an error naming the plugin."""

import textwrap

import pytest
import torch
from torch import nn

import fxq
from fxq import backends, pass_registry, plugins, recipes
from fxq.backends.table import check_backend
from fxq.backends.x86 import X86
from tests.test_pipelines import RUNS

MODEL = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
X = torch.randn(4, 8)


@pytest.fixture
def install(tmp_path, monkeypatch):
    """install(name, entry_points, source): a distribution ``name`` whose module ``<name>_mod`` holds ``source``;
    fxq's registries are copies that forget it afterwards."""
    for name in pass_registry._BUILTIN_MODULES:  # imported now: a copy of the registry then holds them all
        pass_registry.get_pass(name)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins, "_LOADED", set())
    for module, table in ((pass_registry, "_REGISTRY"), (backends, "_BACKENDS"), (recipes, "RECIPES")):
        monkeypatch.setattr(module, table, dict(getattr(module, table)))

    def make(name: str, entry_points: dict[str, list[str]], source: str) -> None:
        module = name.replace("-", "_") + "_mod"
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
        info = tmp_path / f"{name.replace('-', '_')}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
        groups = "".join(f"[{group}]\n" + "".join(f"{line.replace('MOD', module)}\n" for line in lines)
                         for group, lines in entry_points.items())
        (info / "entry_points.txt").write_text(groups)

    return make


PASS_SOURCE = """
    from dataclasses import dataclass
    import fxq

    @dataclass(frozen=True)
    class Plugged(fxq.GraphPass):
        name = "{name}"
        requires = frozenset({requires})
        provides = frozenset({provides})

        def run(self, gm, ctx):
            return gm
"""


def _prepare(**options):
    return fxq.prepare(MODEL, fxq.get_default_qconfig_mapping(), (X,), **options)


def test_a_plugin_pass_is_found_through_its_entry_point_and_runs(install):
    install("good-plugin", {"fxq.passes": ["plugged = MOD:Plugged"]},
            PASS_SOURCE.format(name="plugged", requires="{'fused'}", provides="()"))
    prepared = _prepare(passes={"after fuse": "plugged"})
    assert "plugged" in [record.name for record in fxq.pass_records(prepared)]
    assert "plugged" in fxq.available_passes()


def test_a_plugin_claiming_a_built_in_pass_name_is_refused_naming_the_plugin(install):
    install("clash-plugin", {"fxq.passes": ["fuse = MOD:Plugged"]},
            PASS_SOURCE.format(name="fuse", requires="()", provides="()"))
    RUNS.clear()
    with pytest.raises(fxq.ConfigError, match=r"plugin 'clash-plugin' \(entry point fxq.passes: fuse = "
                                              r"clash_plugin_mod:Plugged\) failed to load: .*'fuse' is already taken"):
        _prepare(passes={"after normalize": "test-tally"})
    assert RUNS == []


def test_a_plugin_pass_needing_what_nothing_provides_is_refused_before_any_pass_runs(install):
    install("magic-plugin", {"fxq.passes": ["needs-magic = MOD:Plugged"]},
            PASS_SOURCE.format(name="needs-magic", requires="{'magic'}", provides="()"))
    RUNS.clear()
    with pytest.raises(fxq.PassOrderError, match=r"'needs-magic' \(from plugin 'magic-plugin' .*\) requires "
                                                 r"\['magic'\].*no installed pass does"):
        _prepare(passes={"after normalize": "test-tally", "after fuse": "needs-magic"})
    assert RUNS == []


def test_a_plugin_that_does_not_import_is_named(install):
    install("missing-plugin", {"fxq.passes": ["gone = no_such_module:Gone"]}, "")
    with pytest.raises(fxq.ConfigError, match=r"plugin 'missing-plugin' .* failed to load: ModuleNotFoundError"):
        _prepare()


BACKEND_SOURCE = """
    import fxq
    from fxq.backends.x86 import X86
    from fxq.backends.table import OpSupport

    BAD = fxq.Backend("bad-table", {"linear": OpSupport("conv2d")})
    GOOD = fxq.Backend("x86-copy", dict(X86.ops), lowering_rules=X86.lowering_rules, engine="x86")
"""


def test_a_malformed_backend_table_is_refused_naming_the_plugin(install):
    install("bad-backend", {"fxq.backends": ["bad-table = MOD:BAD"]}, BACKEND_SOURCE)
    RUNS.clear()
    with pytest.raises(fxq.ConfigError, match=r"plugin 'bad-backend' .* failed to load: ConfigError: backend "
                                              r"'bad-table': ops\['linear'\] describes concept 'conv2d'"):
        _prepare(backend="x86", passes={"after normalize": "test-tally"})
    assert RUNS == []


def test_a_plugin_backend_quantizes_with_its_engine_defaults(install):
    install("copy-backend", {"fxq.backends": ["x86-copy = MOD:GOOD"]}, BACKEND_SOURCE)
    quantized = fxq.quantize(MODEL, (X,), [(X,)], backend="x86-copy", runtime="graph")
    assert type(quantized.get_submodule("0")).__name__ == "QuantizedLinear"
    assert fxq.get_default_qconfig("x86-copy").weight().quant_max == 63  # x86's 7-bit weights: same engine


@pytest.mark.parametrize("change, message", [
    (dict(ops={"no_such_op": fxq.OpSupport("no_such_op")}), "'no_such_op' is not an op concept fxq knows"),
    (dict(ops={"linear": "linear"}), r"ops\['linear'\] is a str, not an OpSupport"),
    (dict(lowering_rules=[]), "lowering_rules must be a tuple of fxq.rewriter.Rule"),
    (dict(fusion_rules=("not a rule",)), "fusion_rules must be a tuple"),
    (dict(engine="tpu"), "engine 'tpu' is not one of this torch's quantized engines"),
    (dict(name=" "), "its name must be a non-empty string"),
])
def test_backend_tables_are_checked(change, message):
    from dataclasses import replace

    with pytest.raises(fxq.ConfigError, match=message):
        check_backend(replace(X86, **change))


def test_a_backend_name_taken_or_an_alias_cannot_be_registered(monkeypatch):
    from dataclasses import replace

    monkeypatch.setattr(backends, "_BACKENDS", dict(backends._BACKENDS))
    for name in ("x86", "fbgemm"):
        with pytest.raises(fxq.ConfigError, match="already taken"):
            fxq.register_backend(replace(X86, name=name))


def test_a_plugin_recipe_is_chosen_by_name(install):
    install("recipe-plugin", {"fxq.recipes": ["careful = MOD:CAREFUL"]}, """
        import fxq
        CAREFUL = fxq.Recipe("careful", float_concepts=(("linear_relu", "the plugin keeps them float"),),
                             prepare_passes=("record-input-statistics",), convert_passes=("bias-correction",))
    """)
    prepared = _prepare(recipe="careful")
    prepared(X)
    records = [record.name for record in fxq.pass_records(fxq.convert(prepared))]
    assert "record-input-statistics" in records and "bias-correction" in records
    fused = next(row for row in fxq.inspect(prepared) if row.concept == "linear_relu")
    assert "the plugin keeps them float" in fused.status


def test_a_plugin_recipe_naming_an_unknown_pass_is_refused(install):
    install("bad-recipe", {"fxq.recipes": ["broken = MOD:BROKEN"]}, """
        import fxq
        BROKEN = fxq.Recipe("broken", prepare_passes=("no-such-pass",))
    """)
    with pytest.raises(fxq.ConfigError, match=r"plugin 'bad-recipe' .* no pass named 'no-such-pass'"):
        _prepare()

"""pipeline.settings: what `auto` resolves to, with CUDA's availability faked."""

import ast

import pytest


class TestDeviceAuto:
    """A GPU box needs no config edits: device and GPU share follow what torch sees."""

    def test_a_machine_with_a_gpu(self, monkeypatch):
        import torch

        from pipeline import settings

        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        resolved = settings.resolve({})
        assert resolved["device"] == "cuda" and resolved["ray"]["gpus_per_trial"] == "auto"  # the executor spreads it (gpu_share)
        assert settings.models_per_trial(resolved["pack"], resolved["device"]) == settings.AUTO_PACK["cuda"]
        assert settings.resolve({"device": "cpu"})["ray"]["gpus_per_trial"] == 0  # a named device wins

    def test_a_machine_without_one(self, monkeypatch):
        import torch

        from pipeline import settings

        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        resolved = settings.resolve({"ray": {"num_cpus": 2}})
        ray = settings.defaults_of(settings.config_schema())["ray"]
        assert resolved["device"] == "cpu" and resolved["ray"] == {**ray, "num_cpus": 2, "gpus_per_trial": 0}


@pytest.mark.parametrize(
    "trials, gpus, share",
    [(12, 4, 1 / 3), (5, 4, 1), (22, 8, 1 / 2), (3, 8, 1), (40, 1, 1 / 8), (5, 1, 1 / 5), (12, 0, 1 / 8)],
)
def test_an_auto_gpu_share_keeps_every_gpu_busy(trials, gpus, share):
    """Ray fills one GPU with fractional shares before the next: 1/m puts m trials on each GPU in turn."""
    from pipeline.settings import gpu_share

    assert gpu_share("auto", trials, gpus) == pytest.approx(share)
    m = round(1 / share)
    assert gpus == 0 or min(gpus, -(-trials // m)) == min(gpus, trials)  # as many GPUs busy as there are trials for
    assert gpu_share(0.25, trials, gpus) == 0.25  # a number is itself


@pytest.mark.parametrize("text,message", [("{bad json", "not JSON (Expecting property name"), ("[1, 2]", "a JSON object is wanted")])
def test_a_commands_json_option_that_is_not_an_object_is_a_usage_error(text, message, capsys):
    from pipeline import reference, sweep

    for main, option in ((sweep.main, ["--grid", "g.yaml", "--settings", text]), (reference.main, ["prepare", "--grid", "table2",
                         "--work", "w", "--seeds", "2", "--extra", text])):  # fmt: skip
        with pytest.raises(SystemExit) as exit_:
            main(option)
        assert exit_.value.code == 2
        assert f"argument {option[-2]}: {message}" in capsys.readouterr().err  # before any file is read or written


# --- each default is stated once ------------------------------------------------------------------
def _leaves(d: dict, out: dict) -> dict:
    for k, v in d.items():
        out[k] = v
        if isinstance(v, dict):
            _leaves(v, out)
    return out


def _schema_defaults(schema: dict, out: dict) -> dict:
    for k, sub in schema.get("properties", {}).items():
        if "default" in sub:
            out[k] = sub["default"]
        _schema_defaults(sub, out)
    return out


def _second_defaults(source: str, keys: dict, paths: set[str]) -> list[str]:
    """Where Python code gives a setting a default of its own: a parameter or a dataclass field of
    the setting's name with a constant (None, "not given", aside), a dict entry or ``.get`` fallback
    restating the setting's default, a default path spelt out, or a form of ``_fallbacks``."""
    found = []
    values = {v for v in keys.values() if isinstance(v, str) and len(v) > 2} - paths  # a path: its own rule
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            a = node.args
            positional = a.posonlyargs + a.args
            pairs = [*zip(positional[len(positional) - len(a.defaults) :], a.defaults), *zip(a.kwonlyargs, a.kw_defaults)]
            found += [f"{node.lineno}: parameter {arg.arg}={ast.unparse(d)}" for arg, d in pairs
                      if arg.arg in keys and isinstance(d, ast.Constant) and d.value is not None]  # fmt: skip
        elif isinstance(node, ast.ClassDef):
            found += [f"{st.lineno}: field {st.target.id} = {ast.unparse(st.value)}" for st in node.body
                      if isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name) and st.target.id in keys
                      and isinstance(st.value, ast.Constant) and st.value.value is not None]  # fmt: skip
        elif isinstance(node, ast.Dict):
            found += [f"{node.lineno}: {{{k.value!r}: {v.value!r}}}" for k, v in zip(node.keys, node.values)
                      if isinstance(k, ast.Constant) and k.value in keys
                      and isinstance(v, ast.Constant) and v.value == keys[k.value]]  # fmt: skip
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" and len(node.args) == 2:
            if isinstance(node.args[0], ast.Constant) and node.args[0].value in keys and isinstance(node.args[1], ast.Constant | ast.Dict):
                found.append(f"{node.lineno}: .get({node.args[0].value!r}, {ast.unparse(node.args[1])})")
        elif isinstance(node, ast.Constant) and node.value in paths:
            found.append(f"{node.lineno}: the default path {node.value!r}")
        found += _fallbacks(node, keys, values)
    return found


def _named(node) -> str | None:
    """The setting a name, attribute or subscript reads: ``x``, ``a.x``, ``a['x']`` -> 'x'."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        return node.slice.value
    return None


def _fallbacks(node, keys: dict, values: set) -> list[str]:
    """The forms a second default hides in besides parameters, fields and ``.get``: ``x.setting or 1000``,
    ``getattr(x, 'setting', 1000)``, an argparse option's default equal to a setting's default, a class
    attribute or a module constant of a setting's name given a constant."""
    line = getattr(node, "lineno", 0)
    constant = lambda v: isinstance(v, ast.Constant) and v.value is not None  # noqa: E731
    if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or) and _named(node.values[0]) in keys and constant(node.values[-1]):
        return [f"{line}: {ast.unparse(node)}"]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr" and len(node.args) == 3:
        if isinstance(node.args[1], ast.Constant) and node.args[1].value in keys and constant(node.args[2]):
            return [f"{line}: {ast.unparse(node)}"]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument":
        given = [kw.value.value for kw in node.keywords if kw.arg == "default" and constant(kw.value)]
        return [f"{line}: option default {v!r}" for v in given if isinstance(v, str) and v in values]
    if isinstance(node, ast.ClassDef | ast.Module):
        assigns = [st for st in node.body if isinstance(st, ast.Assign) and len(st.targets) == 1 and isinstance(st.targets[0], ast.Name)]
        return [f"{st.lineno}: {st.targets[0].id} = {ast.unparse(st.value)}" for st in assigns
                if st.targets[0].id.lower() in keys and constant(st.value)]  # fmt: skip
    return []


def test_each_default_is_stated_once():
    """A setting's default lives in its schema (pipeline/config.schema.yaml, pipeline/grid.schema.yaml),
    or is the trainer's own (icstn.train.TrainConfig); no profile restates it and no pipeline code
    keeps a second one."""
    import yaml

    from pipeline import grids, schema
    from tests.conftest import REPO

    config = _leaves(schema.defaults_of(schema.config_schema()), {})
    keys = {**_schema_defaults(grids.grid_schema(), {}), **config}
    paths = {v for v in config.values() if isinstance(v, str) and "/" in v}
    assert {"cuda_graph", "max_trials", "gpus_per_trial", "batch_size", "iterations", "sigma_px"} <= set(keys)  # the scan sees them
    restated = []
    for profile in sorted((REPO / "config").glob("*.yaml")):
        given = _leaves(yaml.safe_load(profile.read_text()), {})
        restated += [f"{profile.name}: {k}: {v!r}" for k, v in given.items()
                     if k in config and v == config[k] and k != "profile"]  # each profile names itself: paper, quick, medium
    for path in sorted([*(REPO / "pipeline").rglob("*.py"), *(REPO / "benchmarks").rglob("*.py")]):
        restated += [f"{path.relative_to(REPO)}:{line}" for line in _second_defaults(path.read_text(), keys, paths)]
    assert restated == []


def test_the_scan_finds_a_second_default():
    keys, paths = {"cuda_graph": True, "pack": "auto"}, {"data/raw"}
    source = (
        "def f(cuda_graph=True): ...\n"
        "class C:\n    pack: str = 'auto'\n"
        "x = {'cuda_graph': True}\n"
        "y = s.get('pack', 'auto')\n"
        "p.add_argument('--raw', default='data/raw')\n"
        "def g(pack=None, other=3): ...\n"  # None: not given; not a setting
        "z = s.get('pack', schema.default('pack'))\n"  # the one default, read
    )
    assert [line.split(":")[0] for line in _second_defaults(source, keys, paths)] == ["1", "3", "4", "5", "6"]


def test_the_scan_finds_the_hidden_forms_of_a_second_default():
    keys, paths = {"test_samples": None, "results": "results", "pack": "auto", "lr_scale": 1}, set()
    source = (
        "n = trial.test_samples or 1000\n"
        "q = getattr(config, 'pack', 'auto')\n"
        "p.add_argument('--out', default='results')\n"
        "class C:\n    pack = 'auto'\n"
        "LR_SCALE = 1.0\n"
        "m = trial.test_samples or TrainConfig.planar_test_samples\n"  # the one default, read
        "p.add_argument('--out', default=schema.default('results'))\n"
        "k = getattr(config, 'pack')\n"
    )
    assert sorted(line.split(":")[0] for line in _second_defaults(source, keys, paths)) == ["1", "2", "3", "5", "6"]


@pytest.mark.parametrize("text,message", [('{"bogus": 1}', "bogus"), ('{"device": "tpu"}', "key 'device': bad value 'tpu'")])
def test_the_sweeps_settings_are_checked_against_the_schema(text, message, capsys, tmp_path):
    from pipeline import sweep

    with pytest.raises(SystemExit) as exit_:
        sweep.main(["--grid", "g.yaml", "--settings", text, "--out", str(tmp_path / "r")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--settings" in err and message in err
    assert not (tmp_path / "r").exists()  # before any file is written


class TestSweepProfile:
    """`python -m pipeline.sweep --profile medium`: a grid on the medium budget, as the workflow's `--configfile config/medium.yaml`."""

    def given(self, monkeypatch, *args):
        from pipeline import sweep
        from tests.conftest import REPO

        monkeypatch.chdir(REPO)
        seen = {}
        monkeypatch.setattr(sweep, "sweep", lambda grid, out, data, config, *a, **k: seen.update(config=config, data=data))
        assert sweep.main(["--grid", "config/grids/table2.yaml", "--out", "results", *args]) == 0
        return seen

    def test_a_profile_by_name_gives_its_budget(self, monkeypatch):
        import yaml

        from pipeline import settings
        from tests.conftest import REPO

        seen = self.given(monkeypatch, "--profile", "medium")
        medium = yaml.safe_load((REPO / "config" / "medium.yaml").read_text())
        assert seen["config"]["profile"] == "medium" and seen["config"]["budget"] == settings.with_defaults(medium)["budget"]
        assert seen["data"] == "data/processed"  # the profile's data.processed

    def test_settings_win_over_the_profile_and_no_profile_is_the_papers(self, monkeypatch):
        from pipeline import settings

        seen = self.given(monkeypatch, "--profile", "config/quick.yaml", "--settings", '{"budget": {"seeds": 1}}')
        assert seen["config"]["profile"] == "quick" and seen["config"]["budget"]["seeds"] == 1
        assert seen["config"]["budget"]["iterations"]["mnist"] == 300
        assert self.given(monkeypatch)["config"]["budget"] == settings.with_defaults({})["budget"]  # the paper's: each grid's own
        assert self.given(monkeypatch, "--configfile", "config/medium.yaml")["config"]["profile"] == "medium"  # Snakemake's spelling

    def test_an_unknown_profile_is_a_usage_error_naming_the_profiles(self, monkeypatch, capsys):
        with pytest.raises(SystemExit) as exit_:
            self.given(monkeypatch, "--profile", "fast")
        assert exit_.value.code == 2
        assert "unknown profile 'fast'; allowed: medium, paper, quick" in capsys.readouterr().err

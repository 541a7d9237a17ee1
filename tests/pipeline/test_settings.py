"""pipeline.settings: what `auto` resolves to, with CUDA's availability faked."""

import pytest


class TestDeviceAuto:
    """A GPU box needs no config edits: device and GPU share follow what torch sees."""

    def test_a_machine_with_a_gpu(self, monkeypatch):
        import torch

        from pipeline import settings

        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        resolved = settings.resolve({})
        assert resolved["device"] == "cuda" and resolved["ray"]["gpus_per_trial"] == settings.AUTO_GPU_SHARE
        assert settings.models_per_trial(resolved["pack"], resolved["device"]) == settings.AUTO_PACK["cuda"]
        assert settings.resolve({"device": "cpu"})["ray"]["gpus_per_trial"] == 0  # a named device wins

    def test_a_machine_without_one(self, monkeypatch):
        import torch

        from pipeline import settings

        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        resolved = settings.resolve({"ray": {"num_cpus": 2}})
        assert resolved["device"] == "cpu" and resolved["ray"] == {**settings.DEFAULTS["ray"], "num_cpus": 2, "gpus_per_trial": 0}


@pytest.mark.parametrize("text,message", [("{bad json", "not JSON (Expecting property name"), ("[1, 2]", "a JSON object is wanted")])
def test_a_commands_json_option_that_is_not_an_object_is_a_usage_error(text, message, capsys):
    from pipeline import reference, sweep

    for main, option in ((sweep.main, ["--grid", "g.yaml", "--settings", text]), (reference.main, ["prepare", "--grid", "table2",
                         "--work", "w", "--seeds", "2", "--extra", text])):  # fmt: skip
        with pytest.raises(SystemExit) as exit_:
            main(option)
        assert exit_.value.code == 2
        assert f"argument {option[-2]}: {message}" in capsys.readouterr().err  # before any file is read or written

"""The paper's claim at a small budget: on the planar task, error falls as the unroll count N grows,
at every noise level (Table 1's rows). A trainer whose inverse composition is broken fails it."""

import pytest

from icstn import data, models, warps
from icstn.train import TrainConfig, Trainer

pytestmark = pytest.mark.slow  # trains three models per test: minutes on 2 cores

SIGMAS = [2.5, 5.0, 7.5, 10.0]
MODELS = ["c-STN-1", "IC-STN-2", "IC-STN-4"]  # N = 1, 2, 4


def errors(planar, iterations=300) -> dict[str, list[float]]:
    """model -> test error (px) at each sigma: the four noise levels trained together, one seed."""
    out = {}
    for name in MODELS:
        cfg = TrainConfig(iterations=iterations, lr_geometric=3e-5, lr_classifier=0.0, noise_warp="affine", planar_test_samples=200)
        t = Trainer(models.get_config("planar", name), cfg, planar, [0] * len(SIGMAS), SIGMAS)
        out[name] = [row["test_error"] for row in t.fit()]
    return out


def falls_with_n(table: dict[str, list[float]], margin: float = 0.9) -> bool:
    """At every sigma, each larger N has at most ``margin`` times the error of the smaller one."""
    return all(table[b][i] < margin * table[a][i] for i in range(len(SIGMAS)) for a, b in zip(MODELS, MODELS[1:]))


@pytest.fixture(scope="module")
def planar(data_root):
    return data.load(data_root / "processed", "planar")


def test_error_falls_as_n_grows_at_every_sigma(planar):
    table = errors(planar)
    print({m: [round(e, 3) for e in v] for m, v in table.items()})
    assert falls_with_n(table), table


def test_a_broken_inverse_composition_fails_it(planar, monkeypatch):
    """The update is never composed into the warp: every N is then as good as none."""
    monkeypatch.setattr(warps, "compose", lambda dp, p, warp: p + 0 * dp)
    table = errors(planar, iterations=100)
    assert not falls_with_n(table), table

"""icstn.train: many models at once, determinism, checkpoints, and short real runs."""

import pytest
import torch

from icstn import data, models
from icstn.train import Callback, Stopped, TrainConfig, Trainer, eval_steps, extends, log_steps


@pytest.fixture(scope="module")
def mnist(data_root):
    return data.load(data_root / "processed", "mnist").subsample_test(500)


@pytest.fixture(scope="module")
def planar(data_root):
    return data.load(data_root / "processed", "planar")


def trainer(ds, name="IC-STN-2(b)", seeds=(0,), sigmas=None, experiment="mnist", **kw):
    cfg = TrainConfig(**{"iterations": 5, "batch_size": 16, "lr_classifier": 0.1, "lr_geometric": 1e-3, **kw})
    sigmas = sigmas or [3.5] * len(seeds)
    return Trainer(models.get_config(experiment, name), cfg, ds, list(seeds), list(sigmas))


@pytest.mark.parametrize("name", ["IC-STN-2(b)", "c-STN-2(a)", "STN(b)", "CNN(b)"])
def test_batched_equals_single(mnist, name):
    # the paper's learning rates: at 10x, c-STN-2(a) turns chaotic within 5 steps and float32
    # rounding alone (grouped vs single convolutions) then grows to 1e-2
    paper_rates = dict(iterations=10, lr_classifier=0.01, lr_geometric=1e-4)
    together = trainer(mnist, name, seeds=(0, 1), sigmas=(3.5, 2.0), **paper_rates)
    together.fit()
    for k, (seed, sigma) in enumerate([(0, 3.5), (1, 2.0)]):
        alone = trainer(mnist, name, seeds=(seed,), sigmas=(sigma,), **paper_rates)
        init = [p.detach().clone() for p in trainer(mnist, name, seeds=(seed,), sigmas=(sigma,)).model.parameters()]
        alone.fit()
        moved = max((b - i).abs().max().item() for b, i in zip(alone.model.parameters(), init))
        assert moved > 1e-4  # training changed the weights, so equality below means something
        for a, b in zip(together.model.parameters(), alone.model.parameters()):
            assert torch.allclose(a[k], b[0], rtol=1e-5, atol=1e-6), name
        assert together.losses[-1][1][k] == pytest.approx(alone.losses[-1][1][0], abs=1e-5)


@pytest.mark.slow  # trains, or prepares data: seconds to minutes on 2 cores
def test_same_seed_same_numbers(mnist):
    runs = [trainer(mnist, seeds=(3,)) for _ in range(2)]
    results = [t.fit() for t in runs]
    assert results[0] == results[1]
    assert runs[0].losses == runs[1].losses
    other = trainer(mnist, seeds=(4,))
    assert other.fit() != results[0]


@pytest.mark.slow  # trains, or prepares data: seconds to minutes on 2 cores
def test_resume_equals_uninterrupted(mnist, tmp_path):
    straight = trainer(mnist, iterations=6)
    straight.fit()
    first = trainer(mnist, iterations=3)
    first.fit()
    first.save(tmp_path / "ckpt.pt")
    resumed = trainer(mnist, iterations=6)
    resumed.load(tmp_path / "ckpt.pt")
    assert resumed.step == 3
    resumed.fit()
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def same_state(a: Trainer, b: Trainer) -> bool:
    """Bit for bit: every weight, the optimiser, the step and the loss curve."""
    sa, sb = a.state_dict(), b.state_dict()
    weights = all(torch.equal(sa["model"][k], sb["model"][k]) for k in sa["model"])
    return weights and sa["optimizer"] == sb["optimizer"] and a.step == b.step and a.losses == b.losses


@pytest.mark.slow  # trains, or prepares data: seconds to minutes on 2 cores
def test_a_stopped_fit_checkpoints_and_continues_exactly(mnist, tmp_path):
    straight = trainer(mnist, iterations=6)
    final = straight.fit()
    saved = []

    class Save(Callback):
        def on_checkpoint(self, t, step):
            saved.append(step)
            t.save(tmp_path / "c.pt")

    first = trainer(mnist, iterations=6)
    first.callbacks = (Save(),)
    with pytest.raises(Stopped) as stopped:
        first.fit(stop=lambda step: step >= 4)
    assert stopped.value.step == 4 and first.step == 4 and saved == [4]
    resumed = trainer(mnist, iterations=6)
    resumed.load(tmp_path / "c.pt")
    assert resumed.fit() == final and same_state(resumed, straight)


@pytest.mark.slow  # trains, or prepares data: seconds to minutes on 2 cores
def test_a_longer_budget_continues_a_finished_run_exactly(mnist, tmp_path):
    scratch = trainer(mnist, iterations=60, log_every=4)
    final = scratch.fit()
    short = trainer(mnist, iterations=30, log_every=2)  # a denser curve: the longer run keeps its own spacing
    short.fit()
    short.save(tmp_path / "short.pt")
    longer = trainer(mnist, iterations=60, log_every=4)
    assert extends(30, longer.cfg) and not extends(60, longer.cfg)
    longer.load(tmp_path / "short.pt")
    assert longer.fit() == final and same_state(longer, scratch)  # 30 and then 30 more: 60 from scratch, bit for bit
    assert [s for s, _ in longer.losses] == list(range(4, 61, 4))


def test_corrupt_checkpoint_is_named(mnist, tmp_path):
    path = tmp_path / "bad.pt"
    trainer(mnist).save(path)
    raw = bytearray(path.read_bytes())
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=f"checkpoint {path} is unreadable"):
        trainer(mnist).load(path)


def test_checkpoint_of_another_model_is_refused(mnist, tmp_path):
    trainer(mnist, seeds=(1,)).save(tmp_path / "c.pt")
    with pytest.raises(ValueError, match=r"seeds \[1\] \(wanted \[2\]\)"):
        trainer(mnist, seeds=(2,)).load(tmp_path / "c.pt")


@pytest.mark.parametrize(
    "stored, wanted, message",
    [
        ({"lr_geometric": 3e-5}, {}, r"lr_geometric 3e-05 \(wanted 0.001\)"),
        ({"batch_size": 8}, {}, r"batch_size 8 \(wanted 16\)"),
        ({"noise_warp": "affine"}, {}, r"noise_warp 'affine' \(wanted 'homography'\)"),
        ({"iterations": 3}, {"iterations": 2}, r"step 3 \(wanted 'at most iterations=2'\)"),  # past the wanted end
        ({"init": "he"}, {"init": "code"}, r"model.init \{'scheme': 'he', .*\} \(wanted \{'scheme': 'normal', .*\}\)"),
        ({"name": "STN(b)"}, {}, r"model.name 'STN\(b\)' \(wanted 'IC-STN-2\(b\)'\)"),
    ],
)
def test_checkpoint_of_other_settings_is_refused(mnist, tmp_path, stored, wanted, message):
    """It would resume as if it were the wanted run's, and its result be labelled with the wrong settings."""

    def make(changes):
        changes = dict(changes)
        cfg = models.get_config("mnist", changes.pop("name", "IC-STN-2(b)"), changes.pop("init", None))
        train = TrainConfig(**{"iterations": 3, "batch_size": 16, "lr_classifier": 0.1, "lr_geometric": 1e-3, **changes})
        return Trainer(cfg, train, mnist, [0], [3.5])

    first = make(stored)
    first.fit()
    first.save(tmp_path / "c.pt")
    with pytest.raises(ValueError, match=f"checkpoint {tmp_path / 'c.pt'} was trained with other settings: {message}.*; delete it"):
        make(wanted).load(tmp_path / "c.pt")


def test_checkpoint_may_differ_in_what_does_not_change_the_weights(mnist, tmp_path):
    """When it logs, evaluates and saves, and how a step runs: a run resumes with its own."""
    first = trainer(mnist, iterations=3, log_every=1, eval_every=1, checkpoint_every=1, eval_seed=3, cuda_graph=False, tf32=False)
    first.fit()
    first.save(tmp_path / "c.pt")
    resumed = trainer(mnist, iterations=6, log_every=2)
    resumed.load(tmp_path / "c.pt")
    assert resumed.step == 3


def test_callbacks_and_bad_input(mnist):
    seen = []

    class Record(Callback):
        def on_log(self, trainer, step, losses):
            seen.append(("log", step))

        def on_eval(self, trainer, step, results):
            seen.append(("eval", step))

        def on_checkpoint(self, trainer, step):
            seen.append(("ckpt", step))

    t = trainer(mnist, iterations=4, log_every=2, curve_per_decade=0, eval_every=2, checkpoint_every=4)
    t.callbacks = (Record(),)
    t.fit()
    assert seen == [("log", 2), ("eval", 2), ("log", 4), ("ckpt", 4), ("eval", 4)]
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        trainer(mnist, sigmas=(-1.0,))
    with pytest.raises(ValueError, match="cannot undo homography noise"):
        trainer(data.Dataset("x", *[torch.zeros(1)] * 4, None, "unit", {}), "IC-STN-2", experiment="planar", noise_warp="homography")


def test_alignment_outputs(mnist):
    t = trainer(mnist, "IC-STN-2(b)", seeds=(0, 1))
    steps = t.alignment(6, n_warps=3)
    assert steps.shape == (2, 4, 6, 1, 28, 28)
    mean, var = t.class_moments()
    assert mean.shape == var.shape == (2, 10, 1, 28, 28)
    assert (var >= 0).all() and mean.max() <= 1


@pytest.mark.slow  # trains, or prepares data: seconds to minutes on 2 cores
def test_short_mnist_run_learns(mnist):
    t = trainer(mnist, "IC-STN-2(b)", iterations=300, batch_size=100, log_every=25)
    result = t.fit()[0]
    first, last = t.losses[0][1][0], t.losses[-1][1][0]
    assert last < 0.6 * first
    assert result["test_error"] < 50.0  # chance is 90 %


@pytest.mark.slow  # trains, or prepares data: seconds to minutes on 2 cores
def test_short_planar_run_beats_unaligned(planar):
    t = trainer(
        planar,
        "IC-STN-2",
        experiment="planar",
        iterations=300,
        batch_size=50,
        lr_geometric=1e-4,
        lr_classifier=0.0,
        noise_warp="affine",
        planar_test_samples=300,
        sigmas=(7.5,),
    )
    result = t.fit()[0]
    assert result["baseline_error"] > 10.0  # about 2.4 sigma for this noise model
    assert result["test_error"] < 0.8 * result["baseline_error"]
    longer = t.evaluate(n_warps=4)[0]
    assert longer["test_error"] == longer["test_error"]  # unrolling past training stays finite


@pytest.mark.parametrize(
    "experiment, name, noise_warp",
    [("mnist", "IC-STN-4(a)", "homography"), ("gtsrb", "IC-STN-2", "homography"), ("planar", "IC-STN-2", "affine")],
)
def test_whole_step_runs_without_reading_a_value(experiment, name, noise_warp):
    """What a CUDA graph needs to capture the step: on the meta device (shapes, no data) the whole
    step, backward and update included, runs, so it never reads a value on the host (that
    raises on meta) nor mixes in a tensor made on another device. Captured in tests/icstn/test_cuda.py."""
    t = Trainer(
        models.get_config(experiment, name),
        TrainConfig(batch_size=8, noise_warp=noise_warp),
        data.synthetic(experiment, 50),
        [0, 1],
        [3.5, 5.0],
        "meta",
    )
    t.opt.zero_grad(set_to_none=True)
    losses = t.stepper.run()
    assert losses.shape == (2,) and losses.is_meta
    assert all(p.grad is not None and p.grad.is_meta for p in t.model.parameters())
    with pytest.raises(RuntimeError, match="cannot be called on meta tensors"):
        t.stepper.step_t.item()  # the check has teeth: a host read fails here


def test_draws_depend_on_seed_and_step_only(mnist):
    pair, alone = trainer(mnist, seeds=(5, 6)), trainer(mnist, seeds=(6,))
    for t in (pair, alone):
        t.stepper.step_t.fill_(41)
    (src2, lab2, p2), (src1, lab1, p1) = pair.sample_batch(), alone.sample_batch()
    assert torch.equal(src2[1], src1[0]) and torch.equal(lab2[1], lab1[0]) and torch.equal(p2[1], p1[0])
    pair.train_step()
    assert not torch.equal(pair.sample_batch()[1], lab2)  # the next step draws a new batch


class TestEvalSteps:
    def test_three_per_decade_is_the_1_2_5_series_and_the_last_step(self):
        assert eval_steps(300, 3) == [1, 2, 5, 10, 20, 50, 100, 200, 300]
        assert eval_steps(200_000, 3) == [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000, 100_000, 200_000]

    def test_evenly_spaced_in_log(self):
        for n in (1, 2, 3, 4, 6, 10):
            steps = log_steps(10**7, n)
            later = [s for s in steps if s >= 10]  # past the first decade, where integers merge some (1.5 and 2.2 -> 2)
            assert len(later) == 6 * n and len(set(steps)) == len(steps)  # n a decade
            gaps = [b / a for a, b in zip(later, later[1:])]
            assert max(gaps) / min(gaps) < 1.6 and 10 ** (1 / n) / 1.3 < sorted(gaps)[len(gaps) // 2] < 10 ** (1 / n) * 1.3

    def test_a_longer_run_extends_a_shorter_ones_points(self):
        assert set(log_steps(60, 3)) <= set(log_steps(6400, 3)) and log_steps(6400, 3)[: len(log_steps(60, 3))] == log_steps(60, 3)

    def test_eval_every_adds_its_multiples(self):
        assert eval_steps(40, 3, every=15) == [1, 2, 5, 10, 15, 20, 30, 40]
        assert eval_steps(40, 0, every=15) == [15, 30, 40] and eval_steps(40, 0) == [40]

    def test_bad_input(self):
        with pytest.raises(ValueError, match="curve_per_decade must be >= 0, got -1"):
            log_steps(100, -1)


@pytest.mark.slow  # trains, or prepares data: seconds to minutes on 2 cores
def test_the_learning_curve_is_recorded_at_its_steps_and_survives_a_checkpoint(mnist, tmp_path):
    seen = []

    class Record(Callback):
        def on_eval(self, trainer, step, results):
            seen.append(step)

    t = trainer(mnist, seeds=(0, 1), iterations=12, eval_every=4)
    t.callbacks = (Record(),)
    final = t.fit()
    assert [step for step, _ in t.evaluations] == seen == [1, 2, 4, 5, 8, 10, 12]  # log-spaced, every 4th, the last
    assert t.evaluations[-1][1] == final and len(t.evaluations[0][1]) == 2  # the last point is the final evaluation; one dict per model
    assert t.evaluations[0][1][0]["test_error"] != final[0]["test_error"]  # points of a model that trained in between
    final[0]["extra"] = 1.0
    assert "extra" not in t.evaluations[-1][1][0]  # the curve holds copies: adding to the results changes no point

    first = trainer(mnist, seeds=(0, 1), iterations=6, eval_every=4)
    first.fit()
    first.save(tmp_path / "ckpt.pt")
    resumed = trainer(mnist, seeds=(0, 1), iterations=12, eval_every=4)
    resumed.load(tmp_path / "ckpt.pt")
    assert [step for step, _ in resumed.evaluations] == [1, 2, 4, 5, 6]
    resumed.fit()  # step 6 was the shorter run's last, not a point of this schedule: dropped
    assert [step for step, _ in resumed.evaluations] == [1, 2, 4, 5, 8, 10, 12]
    flat = lambda evaluations: [r[name] for _, rows in evaluations for r in rows for name in sorted(r)]  # noqa: E731
    assert flat(resumed.evaluations) == pytest.approx(flat(t.evaluations), rel=1e-5)  # the same curve as uninterrupted

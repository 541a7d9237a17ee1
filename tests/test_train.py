"""icstn.train: many models at once, determinism, checkpoints, and short real runs."""

import pytest
import torch

from icstn import data, models
from icstn.train import Callback, Stopped, TrainConfig, Trainer, extends


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


def test_same_seed_same_numbers(mnist):
    runs = [trainer(mnist, seeds=(3,)) for _ in range(2)]
    results = [t.fit() for t in runs]
    assert results[0] == results[1]
    assert runs[0].losses == runs[1].losses
    other = trainer(mnist, seeds=(4,))
    assert other.fit() != results[0]


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
    with pytest.raises(ValueError, match=r"seeds \[1\]"):
        trainer(mnist, seeds=(2,)).load(tmp_path / "c.pt")


def test_callbacks_and_bad_input(mnist):
    seen = []

    class Record(Callback):
        def on_log(self, trainer, step, losses):
            seen.append(("log", step))

        def on_eval(self, trainer, step, results):
            seen.append(("eval", step))

        def on_checkpoint(self, trainer, step):
            seen.append(("ckpt", step))

    t = trainer(mnist, iterations=4, log_every=2, eval_every=2, checkpoint_every=4)
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


def test_short_mnist_run_learns(mnist):
    t = trainer(mnist, "IC-STN-2(b)", iterations=300, batch_size=100, log_every=25)
    result = t.fit()[0]
    first, last = t.losses[0][1][0], t.losses[-1][1][0]
    assert last < 0.6 * first
    assert result["test_error"] < 50.0  # chance is 90 %


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
    raises on meta) nor mixes in a tensor made on another device. Captured in tests/test_cuda.py."""
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

"""pipeline.progress: the lines a running sweep prints, whichever executor runs it."""

import io

from pipeline.progress import Progress
from pipeline.trial import Member, MemberResult, Trial, TrialRecord


def make_trial(experiment="mnist", model="IC-STN-4(a)", seeds=(0, 1, 2), sigmas=(3.5,), iterations=300):
    members = tuple(Member(s, sigma) for sigma in sigmas for s in seeds)
    train = {"iterations": iterations, "batch_size": 100, "lr_geometric": 1e-4, "lr_classifier": 0.01}
    train |= {"noise_warp": "homography", "eval_every": 100}
    return Trial("g", experiment, model, members, train, 100, ())


def record_of(trial, errors, split="test"):
    members = tuple(MemberResult(m.seed, m.sigma_px, {"test_error": e}, {}, []) for m, e in zip(trial.members, errors))
    return TrialRecord(trial, split, 300, 100, "cpu", {}, 41.2, None, members, {}, {})


def test_label_names_model_noise_and_seeds():
    assert make_trial().label == "IC-STN-4(a) σ=3.5 seeds 0-2"
    assert make_trial(seeds=(0, 1)).label == "IC-STN-4(a) σ=3.5 seeds 0,1"
    assert make_trial(seeds=(0, 2, 5), sigmas=(2.5, 10.0)).label == "IC-STN-4(a) σ=2.5,10 seeds 0,2,5"


def test_lines_say_what_started_where_it_is_and_how_it_ended():
    out = io.StringIO()
    progress = Progress("table2", 2, every=0.0, stream=out)
    a, b = make_trial(), make_trial("planar", "IC-STN-2", seeds=(0,), sigmas=(5.0,), iterations=200)
    progress.started(a)
    progress.started(b)
    progress.step(a.key, 120)
    progress.finished(record_of(a, [10.0, 12.0, 14.0]))
    progress.finished(record_of(b, [1.5], split="validation"))
    lines = out.getvalue().splitlines()
    assert lines[0] == "table2 [0/2] started IC-STN-4(a) σ=3.5 seeds 0-2"
    assert lines[2].endswith("[0/2] running: IC-STN-4(a) σ=3.5 seeds 0-2 at 120/300, IC-STN-2 σ=5 seeds 0 at 0/200")
    assert lines[3] == "table2 [1/2] finished IC-STN-4(a) σ=3.5 seeds 0-2 in 41 s: test error 12% (mean of 3)"
    assert lines[4] == "table2 [2/2] finished IC-STN-2 σ=5 seeds 0 in 41 s: validation error 1.5 px"


def test_noise_levels_are_never_averaged_together():
    out = io.StringIO()
    trial = make_trial("planar", "IC-STN-2", seeds=(0, 1), sigmas=(2.5, 10.0))  # members: (0, 2.5), (1, 2.5), (0, 10), (1, 10)
    Progress("table1", 1, stream=out).finished(record_of(trial, [1.0, 2.0, 7.0, 9.0]))
    line = "table1 [1/1] finished IC-STN-2 σ=2.5,10 seeds 0,1 in 41 s: test error 1.5 px at σ=2.5, 8 px at σ=10 (means of 2)\n"
    assert out.getvalue() == line


def test_a_trial_holding_more_seeds_of_one_level_says_each_count():
    out = io.StringIO()
    trial = make_trial("planar", "c-STN-1", seeds=(0, 1, 2), sigmas=(2.5, 5.0))
    trial = Trial(trial.grid, trial.experiment, trial.model, trial.members[:4], trial.train, 100, ())  # pack 4: 2.5 x 3, 5 x 1
    Progress("table1", 1, stream=out).finished(record_of(trial, [1.0, 2.0, 3.0, 4.0]))
    assert out.getvalue().endswith("test error 2 px at σ=2.5 (mean of 3), 4 px at σ=5 (one seed)\n")


def test_status_lines_come_at_most_every_interval():
    out = io.StringIO()
    progress = Progress("g", 1, every=3600.0, stream=out)
    trial = make_trial()
    progress.started(trial)
    for step in range(1, 50):
        progress.step(trial.key, step)
    assert out.getvalue().count("\n") == 1  # only the start line within the hour


def test_time_left_is_the_rate_since_the_first_report(monkeypatch):
    now = [0.0]
    monkeypatch.setattr("pipeline.progress.time.monotonic", lambda: now[0])
    out = io.StringIO()
    progress = Progress("g", 1, every=0.0, stream=out)
    trial = make_trial(iterations=10_000)
    progress.started(trial)
    now[0] = 100.0
    progress.step(trial.key, 4_000)  # resumed here: no rate yet
    now[0] = 160.0
    progress.step(trial.key, 4_600)  # 600 steps in 60 s: 10 a second, 5,400 to go
    lines = out.getvalue().splitlines()
    assert lines[1] == "g 1:40 [0/1] running: IC-STN-4(a) σ=3.5 seeds 0-2 at 4000/10000"
    assert lines[2] == "g 2:40 [0/1] running: IC-STN-4(a) σ=3.5 seeds 0-2 at 4600/10000 (9 min left)"


def test_durations_read_as_a_person_would_say_them():
    from pipeline.progress import duration

    assert [duration(s) for s in (42, 89.4, 420, 5399, 11_520)] == ["42 s", "89 s", "7 min", "90 min", "3.2 h"]


def test_trials_a_grid_sweeps_settings_for_say_which_in_their_labels(tmp_path):
    from pipeline import grids

    path = tmp_path / "noise_family.yaml"
    path.write_text('experiment: mnist\nmodels: ["STN(b)", "CNN(b)"]\nnoise_warp: [affine, homography]\n'
                    "lr_geometric: [0.0001, 0.01]\nsigma_px: [2.0]\nseeds: [0]\n")  # fmt: skip
    labels = sorted(t.label for t in grids.expand(grids.load_grid(path)))
    assert labels == [  # a CNN has no geometric rate to sweep; the STN's four trials each say theirs
        "CNN(b) noise_warp=affine σ=2 seeds 0",
        "CNN(b) noise_warp=homography σ=2 seeds 0",
        "STN(b) noise_warp=affine lr_geometric=0.0001 σ=2 seeds 0",
        "STN(b) noise_warp=affine lr_geometric=0.01 σ=2 seeds 0",
        "STN(b) noise_warp=homography lr_geometric=0.0001 σ=2 seeds 0",
        "STN(b) noise_warp=homography lr_geometric=0.01 σ=2 seeds 0",
    ]


def test_what_a_label_shows_is_not_part_of_the_key():
    trial = make_trial()
    shown = Trial.from_dict(trial.to_dict() | {"shown": ["noise_warp"]})
    assert shown.label == "IC-STN-4(a) noise_warp=homography σ=3.5 seeds 0-2"
    assert shown.key == trial.key  # results trained before the label said more are still found
    assert Trial.from_dict(shown.to_dict()) == shown  # it travels (Tune's config, record.json)

"""pipeline.stop: a time limit measured on the boot clock, so that a step of the wall clock (NTP,
``date -s``) neither ends a sweep early nor lets it run past its limit; the same for the deadline a
workflow hands to its sweeps. The wall clock is faked (time.time); the boot clock's passing is
faked by moving ``stop.clock``."""

import os
import time

import pytest

from pipeline import stop
from pipeline.stop import Limit


@pytest.fixture
def clocks(monkeypatch):
    """Step the wall clock, or let boot-clock seconds pass: {'wall': offset, 'elapsed': seconds}."""
    offsets = {"wall": 0.0, "elapsed": 0.0}
    real_time, real_clock = time.time, stop.clock
    monkeypatch.setattr(time, "time", lambda: real_time() + offsets["wall"])
    monkeypatch.setattr(stop, "clock", lambda: real_clock() + offsets["elapsed"])
    return offsets


def test_a_forward_step_of_the_wall_clock_does_not_end_the_limit(clocks):
    limit = Limit.after("10m")
    clocks["wall"] = 3 * 3600  # NTP steps the clock 3 h ahead
    assert not limit.time_up() and 590 < limit.remaining() <= 600


def test_a_backward_step_does_not_stretch_it(clocks):
    limit = Limit.after("20s")
    clocks["wall"], clocks["elapsed"] = -3600, 21  # an hour back, and 21 s pass
    assert limit.time_up()


def test_the_workflows_deadline_survives_a_step_in_its_sweeps(clocks, monkeypatch):
    monkeypatch.delenv(stop.DEADLINE_ENV, raising=False)
    stop.export_deadline("10m")
    value = os.environ.pop(stop.DEADLINE_ENV)
    clocks["wall"] = 3 * 3600
    assert not Limit.at(value, "req").time_up()  # what the sweep builds from the environment
    clocks["elapsed"] = 601
    assert Limit.at(value).time_up()


def test_a_worker_on_another_machine_reads_the_wall_clock(clocks):
    here = Limit.after("10m")
    there = Limit(**here.to_dict() | {"machine": "another-boot"})  # a Ray worker's copy, on another node
    assert not there.time_up()
    clocks["wall"] = 601
    assert there.time_up() and not here.time_up()


def test_a_bare_time_value_still_works_and_nonsense_is_named(clocks):
    assert Limit.at(repr(time.time() - 1)).time_up() and not Limit.at(repr(time.time() + 60)).time_up()
    with pytest.raises(ValueError, match="bad deadline 'soon'; allowed: a time.time"):
        Limit.at("soon")

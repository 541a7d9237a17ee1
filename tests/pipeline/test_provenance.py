"""What the provenance says in words: one thread, one seed, in the singular."""

import torch

from pipeline import provenance
from pipeline.report import curves
from tests.pipeline.test_curves import table


def test_one_thread_is_a_thread():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert provenance.device_name("cpu").endswith(", 1 thread)")
        torch.set_num_threads(2)
        assert provenance.device_name("cpu").endswith(", 2 threads)")
    finally:
        torch.set_num_threads(threads)
    assert [provenance.counted(n, "seed") for n in (0, 1, 2, 1000)] == ["0 seeds", "1 seed", "2 seeds", "1,000 seeds"]


def test_the_learning_curves_header_of_one_seed():
    df = table("table2", ["CNN(a)"], [3.5], seeds=(0,)).assign(device="cpu (x86_64, 1 thread)")
    line = curves._provenance("Table 2", df, None, False, 300, True)
    assert "300 iterations, 1 seed, device cpu (x86_64, 1 thread)" in line

"""A checkout whose config/paper_results.csv or config/protocol.csv is broken: the workflow stops
before any job, in seconds, naming the file, the line and the rule (a dry run shows it)."""

import pytest

from tests.workflow.test_attack import mini_workflow, snakemake

pytestmark = pytest.mark.slow  # runs snakemake


@pytest.mark.parametrize(
    "name, line, broken, message",
    [
        ("paper_results.csv", 2, "1,planar,c-STN-1,,2.5,param_error,n/a,,",
         "config/paper_results.csv: line 2: column 'value': bad value 'n/a'; allowed: a finite number >= 0"),
        ("protocol.csv", 0, "experiment,choice,grid,key,value,paper,code",
         "config/protocol.csv: line 1: no column 'label'; the columns are: experiment, choice, grid, key, value, label, paper, code"),
    ],
)  # fmt: skip
def test_a_broken_paper_file_stops_a_dry_run(tmp_path, mirror, name, line, broken, message):
    work = mini_workflow(tmp_path, {})
    path = work / "config" / name
    lines = path.read_text().splitlines()
    lines[max(line - 1, 0)] = broken
    path.write_text("\n".join(lines) + "\n")
    run = snakemake(work, mirror, "-n")
    said = run.stdout + run.stderr
    assert run.returncode == 1 and "PaperFileError in file" in said and message in said, said

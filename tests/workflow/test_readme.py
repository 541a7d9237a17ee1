"""The README a newcomer follows: short, every page it moved linked, every command copy-paste safe,
and each command that can run on a CPU run (a dry run where the real one takes too long).

Each fenced bash block of README.md is marked on the line before it, for these tests:
``<!-- readme-test: run -->`` (run as written), ``<!-- readme-test: dry-run -->`` (make -n, snakemake
-n, a module's options against its --help) or ``<!-- readme-test: skip: <why> -->`` (a GPU, a cluster,
a server).
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.workflow.test_fresh_clone import copy_tracked

README = REPO / "README.md"
FENCE = re.compile(r"(?:<!-- readme-test: (?P<mark>[^>]*?) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)```", re.S)
MARKS = ("run", "dry-run", "skip:")
BIN = Path(sys.executable).parent


def blocks(lang: str) -> list[tuple[str | None, str]]:
    """(mark, body) of each fenced block of ``lang``."""
    return [(m["mark"], m["body"]) for m in FENCE.finditer(README.read_text()) if m["lang"] == lang]


def commands(body: str) -> list[list[str]]:
    """The block's commands as argument lists: continuation lines joined, comments dropped, `a && b` split."""
    out = []
    for line in body.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            out.append(words[:cut])
            words = words[cut + 1 :]
    return out


def test_every_bash_block_says_whether_the_tests_run_it():
    found = blocks("bash")
    assert found, "the README has no commands"
    unmarked = [body for mark, body in found if mark is None or not mark.startswith(MARKS)]
    assert not unmarked, f"mark these blocks with <!-- readme-test: run|dry-run|skip: why -->: {unmarked}"


def test_it_is_short_and_every_page_it_links_exists():
    text = README.read_text()
    assert len(text.splitlines()) <= 160
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if not link.startswith("http")]
    for page in ("docs/architecture.md", "docs/library.md", "docs/protocol.md", "docs/troubleshooting.md", "docs/scaling.md",
                 "benchmarks/README.md", "config/README.md", "CONTRIBUTING.md", "LICENSE", "CITATION.cff"):  # fmt: skip
        assert page in local, f"the README should link {page}"
    assert [link for link in local if not (REPO / link).exists()] == []
    assert "arxiv.org/abs/1612.03897" in text


def test_every_command_names_its_profile():
    """A bare snakemake command runs the paper profile (200,000 iterations): each names one, as does each sweep."""
    for _, body in blocks("bash"):
        for words in commands(body):
            if "snakemake" in Path(words[0]).name or words[:3] == ["python", "-m", "snakemake"]:
                assert "--configfile" in words, words
            if "pipeline.sweep" in words:
                assert "--profile" in words, words


def test_the_readme_ablation_trains_what_it_says_under_the_medium_profile(monkeypatch, tmp_path):
    from pipeline import grids, settings

    monkeypatch.chdir(REPO)
    [(path, doc)] = readme_files()
    grid = grids.load_grid(write(tmp_path, path, doc), settings.load_profile("medium")["budget"])
    assert grid.lr_geometric == (1e-4, 3e-4)  # numbers, though YAML 1.1 reads 1e-4 as a string
    assert (grid.iterations, grid.seeds, grid.sigma_px) == (3000, (0, 1, 2), (2.5, 3.5, 5.0))
    assert grids.size(grid, settings.AUTO_PACK["cpu"]) == (6, 18)  # "18 models (6 trials)"


def readme_files() -> list[tuple[str, str]]:
    """The files the README asks a reader to write: yaml blocks whose first line is ``# <path>``."""
    return [(body.splitlines()[0][2:].strip(), body) for _, body in blocks("yaml") if body.startswith("# config/")]


def write(root: Path, path: str, doc: str) -> Path:
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(doc)
    return target


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """The tracked files in a scratch folder, with the files the README asks for written in."""
    root = copy_tracked(tmp_path_factory.mktemp("readme") / "icstn-bench")
    for path, doc in readme_files():
        write(root, path, doc)
    return root


def run(words: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(words, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def dry(words: list[str], cwd: Path, env: dict) -> None:
    """A command's dry run: make -n, snakemake -n, or its options against the module's --help."""
    name = Path(words[0]).name
    if name == "source":
        assert words[1] == ".venv/bin/activate"  # what `make` creates (the Makefile's VENV)
        return
    if name == "make":
        out = run(["make", "-n", *words[1:]], cwd, env)
    elif name == "snakemake":
        out = run([str(BIN / "snakemake"), *words[1:], "-n"], cwd, env)
    elif name == "python" and words[1] == "-m":
        out = run([sys.executable, "-m", words[2], "--help"], cwd, env)
        assert out.returncode == 0, out.stderr[-2000:]
        missing = [w for w in words[3:] if w.startswith("--") and w not in out.stdout]
        assert not missing, f"{words[2]} has no option {missing}"
        return
    else:
        raise AssertionError(f"no dry run known for {words}")
    assert out.returncode == 0, f"{words}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"


@pytest.mark.slow
def test_each_command_runs(clone, tmp_path):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    ran = 0
    for mark, body in blocks("bash"):
        for words in commands(body):
            if mark == "run":
                words = [str(BIN / Path(words[0]).name) if words[0].startswith(".venv/bin/") else words[0], *words[1:]]
                out = run(words, clone, env)
                assert out.returncode == 0, f"{words}\n{out.stderr[-3000:]}"
            elif mark == "dry-run":
                dry(words, clone, env)
            else:
                continue
            ran += 1
    assert ran >= 7
    assert yaml.safe_load((clone / "config" / "medium.yaml").read_text())["profile"] == "medium"

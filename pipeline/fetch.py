"""Fetch the raw dataset files, verified: the official sources first, then a mirror.

    python -m pipeline.fetch mnist gtsrb planar --raw data/raw [--mirror DIR_OR_URL]

Each file is tried at its official URL (HTTPS, verified by the official checksum), then at the
mirror, if one is set (``--mirror``, config ``data.mirror`` or ``ICSTN_DATA_MIRROR``): a
directory or URL prefix laid out as ``<mirror>/<dataset>/<file>`` with a ``SHA256SUMS`` file
per dataset. Downloads go through pooch: progress bars, time-outs, a temporary file renamed
only once verified. A file already verified is not fetched again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import pooch

from pipeline import schema
from pipeline.files import write_json, write_text
from pipeline.provenance import redact

TIMEOUT_S = 15  # per request; offline, the official source fails at once (no DNS)
pooch.get_logger().setLevel("WARNING")  # its "Downloading data from <url>" would print credentials; ours is redacted

_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_GTSRB = "https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/"
_CAFFE = "https://raw.githubusercontent.com/BVLC/caffe/master/examples/images/"

#: dataset -> file -> (official URL, official checksum in pooch's "alg:hex" form)
SOURCES = {
    "mnist": {
        "train-images-idx3-ubyte.gz": (_MNIST, "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        "train-labels-idx1-ubyte.gz": (_MNIST, "md5:d53e105ee54ea40749a09fcbcd1e9432"),
        "t10k-images-idx3-ubyte.gz": (_MNIST, "md5:9fb629c4189551a2d022fa330f9573f3"),
        "t10k-labels-idx1-ubyte.gz": (_MNIST, "md5:ec29112dd5afa0611ce80d1b7f02629c"),
    },
    "gtsrb": {
        "GTSRB_Final_Training_Images.zip": (_GTSRB, "md5:f33fd80ac59bff73c82d25ab499e03a3"),
        "GTSRB_Final_Test_Images.zip": (_GTSRB, "md5:c7e4e6327067d32654124b0fe9e82185"),
        "GTSRB_Final_Test_GT.zip": (_GTSRB, "md5:fe31e9c9270bbcd7b84b7f21a9d9d9e5"),
    },
    # Caffe publishes no checksum; this is the SHA-256 of the file in the repository.
    "planar": {"cat.jpg": (_CAFFE, "sha256:59b67bce343d435cb8f79b6abefc6eecc79924abcda6e7c7e39f8173bb932bc1")},
}
DATASETS = tuple(SOURCES)


class FetchError(RuntimeError):
    """A file could not be fetched and verified; the message says what to do (credentials redacted)."""

    def __init__(self, message: str):
        super().__init__(redact(message))


def check_datasets(names: list[str]) -> None:
    bad = [n for n in names if n not in SOURCES]
    if bad:
        raise ValueError(f"unknown dataset {bad[0]!r}; allowed: {list(DATASETS)}")


def file_hashes(path: Path, algs: set[str]) -> dict[str, str]:
    """Several digests of a file in one read: alg -> hex."""
    hashes = {alg: hashlib.new(alg) for alg in algs}
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            for h in hashes.values():
                h.update(block)
    return {alg: h.hexdigest() for alg, h in hashes.items()}


def file_hash(path: Path, alg: str = "sha256") -> str:
    return file_hashes(path, {alg})[alg]


def _is_url(location: str) -> bool:
    return "://" in location


def mirror_checksums(mirror: str, dataset: str) -> dict[str, str]:
    """``file -> "sha256:hex"`` from the mirror's ``<dataset>/SHA256SUMS``."""
    where = f"{mirror.rstrip('/')}/{dataset}/SHA256SUMS"
    try:
        if _is_url(mirror):
            import requests

            response = requests.get(where, timeout=TIMEOUT_S)
            response.raise_for_status()
            text = response.text
        else:
            text = Path(where).read_text()
    except Exception as exc:
        raise FetchError(f"cannot read the mirror's checksums {where}: {exc}") from exc
    sums = {}
    for line in text.splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.lstrip("*").strip()] = f"sha256:{digest}"
    return sums


def _copy_local(url: str, output_file, pooch_obj) -> None:
    """pooch downloader for a mirror that is a plain directory."""
    shutil.copyfile(url, output_file)  # pooch hands a temporary path, renamed once verified


def _retrieve(location: str, known: str, dest: Path) -> None:
    """Fetch one file to ``dest`` with pooch and verify it (pooch deletes a bad download)."""
    progress = sys.stderr.isatty() or bool(os.environ.get("ICSTN_PROGRESS"))
    downloader = _copy_local if not _is_url(location) else pooch.HTTPDownloader(progressbar=progress, timeout=TIMEOUT_S)
    pooch.retrieve(location, known_hash=known, fname=dest.name, path=dest.parent, downloader=downloader, progressbar=progress)


def fetch_file(dataset: str, name: str, raw: Path, mirror: str | None, sums: dict[str, str] | None) -> tuple[Path, str]:
    """Make ``raw/<dataset>/<name>`` a verified copy; returns its path and SHA-256."""
    dest = raw / dataset / name
    base, official = SOURCES[dataset][name]
    accepted = [official] + ([sums[name]] if sums and name in sums else [])
    verified = origins(dest.parent).get(name, {}).get("sha256")  # verified when it was fetched, from wherever
    accepted += [f"sha256:{verified}"] if verified else []
    if dest.is_file():
        digests = file_hashes(dest, {k.split(":")[0] for k in accepted} | {"sha256"})
        if any(digests[k.split(":")[0]] == k.split(":")[1] for k in accepted):
            return dest, digests["sha256"]
    tried = []
    attempts = [(base + name, official)]
    if mirror:
        if not sums or name not in sums:
            raise FetchError(f"the mirror {mirror} lists no checksum for {dataset}/{name} in its SHA256SUMS")
        attempts.append((f"{mirror.rstrip('/')}/{dataset}/{name}", sums[name]))
    for location, known in attempts:
        try:
            _retrieve(location, known, dest)
            digest = file_hash(dest)
            # a local mirror by its layout, not its path: the note travels in results and references to other machines
            record_origin(dest, location if _is_url(location) else f"mirror:{dataset}/{name}", digest)
            print(f"fetched {dataset}/{name} from {redact(location)}", file=sys.stderr)
            return dest, digest
        except Exception as exc:  # the next source may work; report all at the end
            tried.append(f"  {location}: {_describe(exc, location, known)}")
    advice = "" if mirror else "\nNo mirror is set: point ICSTN_DATA_MIRROR (or config data.mirror) at a copy of the files."
    raise FetchError(f"could not fetch {dataset}/{name} into {dest}:\n" + "\n".join(tried) + advice)


def _describe(exc: Exception, location: str, known: str) -> str:
    text = str(exc)
    if "hash" in text.lower() and not _is_url(location):
        actual = file_hash(Path(location), known.split(":")[0])
        return f"checksum mismatch: expected {known}, got {known.split(':')[0]}:{actual} (the file is corrupt)"
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def is_official(dataset: str, location: str) -> bool:
    """Whether a file's recorded origin (``ORIGINS.json``, a results table's ``data_fetched_from``) is
    the dataset's official source, not a mirror."""
    return any(location.startswith(base) for base, _ in SOURCES.get(dataset, {}).values())


def default_mirror(mirror: str | None) -> None:
    """Make ``mirror`` (the config's data.mirror) the mirror of this process and its jobs, unless
    ICSTN_DATA_MIRROR already names one."""
    if mirror and not os.environ.get("ICSTN_DATA_MIRROR"):
        os.environ["ICSTN_DATA_MIRROR"] = mirror


def fetch(datasets: list[str], raw: str | Path, mirror: str | None = None) -> dict[str, dict[str, str]]:
    """Fetch and verify every file of ``datasets``; returns dataset -> {file: SHA-256}."""
    check_datasets(datasets)
    mirror = mirror or os.environ.get("ICSTN_DATA_MIRROR") or None
    if mirror and not _is_url(mirror):
        mirror = str(Path(mirror).resolve())
        if not Path(mirror).is_dir():
            raise FetchError(f"the data mirror {mirror} is not a directory (set by --mirror, data.mirror or ICSTN_DATA_MIRROR)")
    out = {}
    for dataset in datasets:
        sums = mirror_checksums(mirror, dataset) if mirror else None
        out[dataset] = {name: fetch_file(dataset, name, Path(raw), mirror, sums)[1] for name in SOURCES[dataset]}
        marker = Path(raw) / dataset / "VERIFIED.json"  # the workflow's marker: every file present and verified
        verified = json.dumps(out[dataset], indent=1)
        if not marker.is_file() or marker.read_text() != verified:
            write_text(marker, verified)
    return out


def origins(folder: Path) -> dict[str, dict]:
    """``<raw>/<dataset>/ORIGINS.json``: file -> {"from": where it was fetched, "sha256": as verified}."""
    path = folder / "ORIGINS.json"
    found = json.loads(path.read_text()) if path.is_file() else {}
    return {name: v if isinstance(v, dict) else {"from": v} for name, v in found.items()}  # older files: the location only


def record_origin(dest: Path, location: str, sha256: str) -> None:
    """Note where a verified file came from (provenance, credentials redacted) and its digest.

    A file whose digest matches its note stays verified whatever mirror is set later, or none.
    """
    found = origins(dest.parent)
    found[dest.name] = {"from": redact(location), "sha256": sha256}
    write_json(dest.parent / "ORIGINS.json", found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("datasets", nargs="+", help=f"any of {list(DATASETS)}")
    parser.add_argument("--raw", default=schema.default("data", "raw"), help="where the raw files go")
    parser.add_argument("--mirror", default=None, help="mirror directory or URL prefix (default: $ICSTN_DATA_MIRROR)")
    args = parser.parse_args(argv)
    try:
        for dataset, files in fetch(args.datasets, args.raw, args.mirror).items():
            print(f"{dataset}: {len(files)} files verified in {Path(args.raw) / dataset}")
    except (FetchError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

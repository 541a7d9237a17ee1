"""Command line: list the paper's models, or train and evaluate one.

python -m icstn models [--format csv|table]
python -m icstn train --experiment mnist --model "IC-STN-4(a)" --iterations 500 --seeds 0 1
python -m icstn train --experiment gtsrb --model IC-STN-4 --init he --iterations 100
"""

from __future__ import annotations

import argparse
import json
import sys

from icstn import data, experiments, models
from icstn.train import TrainConfig, Trainer


def cmd_models(args) -> int:
    rows = [(exp, name, models.capacity(cfg)) for (exp, name), cfg in models.REGISTRY.items()]
    if args.format == "csv":
        print("experiment,model,parameters")
        for row in rows:
            print(",".join(map(str, row)))
    else:
        for exp, name, n in rows:
            print(f"{exp:<7} {name:<12} {n:>8,}  {models.REGISTRY[(exp, name)].predictor or ''}")
    return 0


def cmd_train(args) -> int:
    d = experiments.get(args.experiment).defaults  # what the paper (or the released code) uses
    cfg = models.get_config(args.experiment, args.model, args.init)
    train_cfg = TrainConfig(
        iterations=args.iterations,
        batch_size=args.batch_size,
        lr_geometric=args.lr_geometric if args.lr_geometric is not None else d["lr_geometric"],
        lr_classifier=args.lr_classifier if args.lr_classifier is not None else d["lr_classifier"],
        noise_warp=args.noise_warp or d["noise_warp"],
    )
    dataset = data.load(args.data, args.experiment).subsample_test(args.test_samples)
    sigma = args.sigma if args.sigma is not None else d["sigma_px"]
    trainer = Trainer(cfg, train_cfg, dataset, args.seeds, [sigma] * len(args.seeds), args.device)
    results = trainer.fit(progress=True)
    for seed, row in zip(args.seeds, results):
        print(json.dumps({"model": args.model, "seed": seed, "sigma_px": sigma, "iterations": trainer.step, **row}))
    if args.checkpoint:
        print(f"checkpoint: {trainer.save(args.checkpoint)}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m icstn", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("models", help="list every paper variant with its capacity")
    p.add_argument("--format", choices=["table", "csv"], default="table")
    p = sub.add_parser("train", help="train and evaluate one model (several seeds at once)")
    p.add_argument("--experiment", choices=list(experiments.EXPERIMENTS), required=True)
    p.add_argument("--model", required=True, help="paper name, e.g. 'IC-STN-4(a)'")
    p.add_argument("--data", default="data/processed", help="prepared datasets (python -m pipeline.prepare)")
    p.add_argument("--iterations", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--sigma", type=float, default=None, help="noise in pixels (default: the paper's)")
    p.add_argument("--noise-warp", default=None)
    p.add_argument("--init", default=None, help="a named initialisation of the experiment, e.g. code or he (default: its own)")
    p.add_argument("--lr-geometric", type=float, default=None)
    p.add_argument("--lr-classifier", type=float, default=None)
    p.add_argument("--test-samples", type=int, default=None, help="evaluate on a fixed subset")
    p.add_argument("--device", default="cpu")
    p.add_argument("--checkpoint", default=None, help="save the final state here")
    args = parser.parse_args(argv)
    try:
        return cmd_models(args) if args.command == "models" else cmd_train(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

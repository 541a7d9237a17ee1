"""The paper's models (Tables 1-3): CNN, STN, c-STN-k and IC-STN-N, and their registry.

Every variant is a geometric part (zero or more predictors) followed by a classifier, both
written in the paper's architecture notation (see ``icstn.layers``). Families:

* ``cnn``: no warp; the classifier sees the perturbed sample.
* ``stn``: one predictor warps the perturbed sample once (zeros where it leaves the sample).
* ``cstn``: k predictors with their own weights; each predicts an update dp from the current
  warp of the *original* image, the updates compose (M(p) <- M(dp) M(p)), and the original
  image is warped once more at the end, so no geometry is lost.
* ``icstn``: one predictor, shared, applied N times the same way; N may differ at test time.

The planar models have no classifier: the output is the final warp.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
import torch.nn as nn

from icstn import experiments, warps
from icstn.layers import StackedNet

FAMILIES = ("cnn", "stn", "cstn", "icstn")

#: Whether a c-STN or IC-STN samples its last warp when nothing reads the result (a planar model has
#: no classifier, and its output is the warp itself). False skips that sampling: the same outputs,
#: one warp fewer per step (planar c-STN-1: one of its two). True keeps the old path, the benchmark's baseline.
SAMPLE_UNREAD_LAST_WARP = False


@dataclass(frozen=True)
class ModelConfig:
    """One paper variant. ``predictor`` is one geometric predictor's architecture."""

    name: str
    experiment: str  # planar | mnist | gtsrb
    family: str  # cnn | stn | cstn | icstn
    classifier: str | None
    predictor: str | None = None
    n_warps: int = 0  # warps in training: 1 for STN, k for c-STN-k, N for IC-STN-N
    warp: str = "homography"
    channels: int = 1
    size: int = 28  # side of the sample the networks see
    num_classes: int = 10
    init: experiments.Init = experiments.Init("normal")  # how its weights start

    @property
    def n_predictors(self) -> int:
        return {"cnn": 0, "stn": 1, "cstn": self.n_warps, "icstn": 1}[self.family]


class Output(NamedTuple):
    p: torch.Tensor  # (K, B, D) final warp (for STN: relative to the perturbed sample)
    logits: torch.Tensor | None  # (K, B, classes), None for the planar models
    steps: list[torch.Tensor]  # [(K, B, C, S, S)]: input sample, then after each warp


class AlignNet(nn.Module):
    """K models of one variant, trained together. K = 1 is the ordinary model."""

    def __init__(self, cfg: ModelConfig, seeds: list[int]):
        super().__init__()
        self.cfg, self.k = cfg, len(seeds)
        shape = (cfg.channels, cfg.size, cfg.size)
        self.predictors = nn.ModuleList(StackedNet(cfg.predictor, shape, self.k) for _ in range(cfg.n_predictors))
        for net in self.predictors:
            if net.out_features != warps.WARP_DOF[cfg.warp]:
                raise ValueError(f"{cfg.name}: predictor outputs {net.out_features}, {cfg.warp} needs {warps.WARP_DOF[cfg.warp]}")
        self.classifier = StackedNet(cfg.classifier, shape, self.k) if cfg.classifier else None
        init = cfg.init
        for i, net in enumerate(self.predictors):
            net.init_([s * 1000 + i for s in seeds], init.scheme, init.predictor_std, zero_last=init.zero_last)
        if self.classifier is not None:
            self.classifier.init_([s * 1000 + 999 for s in seeds], init.scheme, init.classifier_std)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Geometric-predictor and classifier parameters, for their separate learning rates."""
        return {
            "geometric": list(self.predictors.parameters()),
            "classifier": list(self.classifier.parameters()) if self.classifier else [],
        }

    def _warp(self, source: torch.Tensor, p: torch.Tensor, ref: torch.Tensor | None) -> torch.Tensor:
        """(K, B, C, H, W) or (1, 1, C, H, W) source, (K, B, D) p -> (K, B, C, S, S)."""
        s = self.cfg.size
        flat_p = p.flatten(0, 1)  # (K*B, D)
        flat_src = source.flatten(0, 1)
        out = warps.warp_image(flat_src, flat_p, self.cfg.warp, (s, s), ref)
        return out.view(*p.shape[:2], *out.shape[1:])

    def forward(
        self,
        source: torch.Tensor,
        p_init: torch.Tensor,
        ref: torch.Tensor | None = None,
        n_warps: int | None = None,
        keep_steps: bool = False,
    ) -> Output:
        """Align (and classify) perturbed samples.

        Args:
            source: (K, B, C, H, W) original images, or (1, 1, C, H, W) one image for all.
            p_init: (K, B, D) perturbation warps; the network sees ``source`` warped by them.
            ref: optional (3, 3) matrix from the sample's canonical square to the source.
            n_warps: warps to apply (IC-STN only; default: as trained).
            keep_steps: keep the warped sample after each warp (for the alignment figures).
        """
        cfg = self.cfg
        n = cfg.n_warps if n_warps is None else n_warps
        if n != cfg.n_warps and cfg.family != "icstn":
            raise ValueError(f"{cfg.name}: only IC-STN applies a different number of warps at test time, got n_warps={n}")
        if n < 1 and cfg.family != "cnn":
            raise ValueError(f"n_warps must be >= 1, got {n}")
        if p_init.ndim != 3 or p_init.shape[0] != self.k:
            raise ValueError(f"p_init must have shape (K={self.k}, B, D), got {tuple(p_init.shape)}")
        x = self._warp(source, p_init, ref)  # (K, B, C, S, S) perturbed sample
        steps = [x] if keep_steps else []
        p = p_init
        if cfg.family == "stn":
            p = self.predictors[0](x)
            x = self._warp(x, p, None)  # resamples the sample itself: content outside it is lost
            steps += [x] if keep_steps else []
        elif cfg.family in ("cstn", "icstn"):
            for i in range(n):
                dp = self.predictors[i if cfg.family == "cstn" else 0](x)  # (K, B, D)
                p = warps.compose(dp.flatten(0, 1), p.flatten(0, 1), cfg.warp).view_as(p)
                if i < n - 1 or self.classifier is not None or keep_steps or SAMPLE_UNREAD_LAST_WARP:
                    x = self._warp(source, p, ref)
                    steps += [x] if keep_steps else []
        logits = self.classifier(x) if self.classifier is not None else None
        return Output(p, logits, steps)


def check_noise(cfg: ModelConfig, noise_warp: str) -> None:
    """ValueError unless the model's warps can undo perturbations of family ``noise_warp``."""
    warps.check_warp(noise_warp)
    if cfg.family != "cnn" and warps.WARP_DOF[noise_warp] > warps.WARP_DOF[cfg.warp]:
        raise ValueError(
            f"{cfg.name} predicts {cfg.warp} warps and cannot undo {noise_warp} noise; "
            f"allowed: {[w for w, dof in warps.WARP_DOF.items() if dof <= warps.WARP_DOF[cfg.warp]]}"
        )


def capacity(cfg: ModelConfig) -> int:
    """Learnable parameters of one model of this variant."""
    return sum(t.numel() for t in AlignNet(cfg, [0]).parameters())


# --- the registry: every row of Tables 1-3, named as in the paper (icstn.experiments) -----


def _config(exp: experiments.Experiment, v: experiments.Variant) -> ModelConfig:
    return ModelConfig(
        v.name, exp.name, v.family, v.classifier, v.predictor, v.n_warps,
        exp.warp, exp.layout.channels, exp.sample_size, exp.num_classes, exp.inits[exp.defaults["init"]],
    )  # fmt: skip


REGISTRY = {(e.name, v.name): _config(e, v) for e in experiments.EXPERIMENTS.values() for v in e.variants}


def model_names(experiment: str) -> list[str]:
    return [v.name for v in experiments.get(experiment).variants]


_ICSTN_N = re.compile(r"IC-STN-(\d+)(\([ab]\))?")
#: The most warps an IC-STN may unroll (in training or at test time): the paper's Figure 7 goes to
#: 12, and every warp is one more pass of the predictor and one more resampling per step.
MAX_WARPS = 32


def get_config(experiment: str, name: str, init: str | None = None) -> ModelConfig:
    """The variant ``name`` of ``experiment``, its weights started by the experiment's ``init``
    (default: the experiment's); ValueError naming the allowed ones.

    Besides the registered rows, IC-STN-N takes any N >= 1 (an unroll-count ablation): it is
    the registered IC-STN of that experiment (and setting) unrolled N times.
    """
    if init is not None:
        inits = experiments.get(experiment).inits
        if init not in inits:
            raise ValueError(f"unknown {experiment} init {init!r}; allowed: {sorted(inits)}")
        return replace(get_config(experiment, name), init=inits[init])
    names = model_names(experiment)
    if name in names:
        return REGISTRY[(experiment, name)]
    m = _ICSTN_N.fullmatch(name)
    template = REGISTRY.get((experiment, f"IC-STN-2{m.group(2) or ''}")) if m else None
    if template is None or not 1 <= int(m.group(1)) <= MAX_WARPS:
        raise ValueError(f"unknown {experiment} model {name!r}; allowed: {names} (or IC-STN-N, 1 <= N <= {MAX_WARPS})")
    return replace(template, name=name, n_warps=int(m.group(1)))

"""One SGD step of K models, and on CUDA the same step captured once in a CUDA graph and replayed.

The step samples, runs forward and backward and updates, with static shapes and no host sync:
that is what lets a CUDA graph capture it, so that a step costs one launch instead of hundreds.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from icstn.models import AlignNet
from icstn.sampling import Sampler

#: Eager steps before a CUDA graph is captured (cuDNN autotuning and lazy initialisation).
GRAPH_WARMUP = 3


class TrainStep:
    """Steps of ``model`` on ``sampler``'s batches; ``graphed``: capture on CUDA; ``tf32``: TF32 on CUDA."""

    def __init__(self, model: AlignNet, opt: torch.optim.Optimizer, sampler: Sampler, batch_size: int, graphed: bool, tf32: bool):
        self.model, self.opt, self.sampler, self.batch_size = model, opt, sampler, batch_size
        self.device = sampler.device
        self.graphed, self.tf32 = graphed and self.device.type == "cuda", tf32
        self.step_t = torch.zeros((), dtype=torch.long, device=self.device)  # the graph advances it
        self.graph, self.graph_losses, self.warm = None, None, 0

    def loss(self, out, labels: torch.Tensor | None) -> torch.Tensor:
        """Per-model loss (K,): cross-entropy, or for alignment the L2 warp-parameter error."""
        if self.sampler.alignment:
            return out.p.pow(2).sum(-1).mean(-1)  # the ground truth is the identity, p = 0
        k = self.sampler.k
        return F.cross_entropy(out.logits.flatten(0, 1), labels.flatten(), reduction="none").view(k, -1).mean(-1)

    def run(self) -> torch.Tensor:
        """Sample, forward, backward, update: what a CUDA graph captures. Gradients must be None
        before it (zero_grad(set_to_none=True)). Returns the per-model losses (K,)."""
        source, labels, p = self.sampler.batch(self.step_t, self.batch_size)
        losses = self.loss(self.model(source, p, self.sampler.data.ref), labels)
        losses.sum().backward()  # models share no weights: each gets its own gradient
        self.opt.step()
        self.step_t += 1
        return losses.detach()

    def __call__(self) -> torch.Tensor:
        """One SGD step of every model; returns the per-model losses (K,).

        With a CUDA graph, the first GRAPH_WARMUP steps run eagerly on a side stream, the next
        one captures the step, and every step replays it. The returned tensor is then the
        graph's output, overwritten by the next step: copy it to keep it.
        """
        if self.graph is None:
            self._set_precision()  # a replay keeps what its capture had
        if self.graphed and self.graph is None and self.warm >= GRAPH_WARMUP:
            self._capture()
        if self.graph is not None:
            self.graph.replay()
            return self.graph_losses
        with self._warmup_stream():
            self.opt.zero_grad(set_to_none=True)
            losses = self.run()
        self.warm += 1
        return losses

    def restart(self, step: int) -> None:
        """Continue from ``step`` (after loading a checkpoint): the draws are a function of the step,
        and the graph is captured again, with what was loaded."""
        self.step_t.fill_(step)
        self.graph, self.warm = None, 0

    def _set_precision(self) -> None:
        """Float32 precision on CUDA (process-wide flags, so set before this model's steps)."""
        if self.device.type == "cuda":
            precision = "tf32" if self.tf32 else "ieee"
            torch.backends.cuda.matmul.fp32_precision = precision
            torch.backends.cudnn.conv.fp32_precision = precision
            torch.backends.cudnn.benchmark = True  # static shapes: autotune each convolution once

    @contextlib.contextmanager
    def _warmup_stream(self):
        """Eager steps before a capture run on a side stream, as CUDA graphs require."""
        if not self.graphed:
            yield
            return
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            yield
        torch.cuda.current_stream(self.device).wait_stream(side)

    def _capture(self) -> None:
        graph = torch.cuda.CUDAGraph()
        self.opt.zero_grad(set_to_none=True)  # backward in the capture allocates static gradients
        try:
            with torch.cuda.graph(graph):
                self.graph_losses = self.run()
        except RuntimeError as exc:
            raise RuntimeError(
                f"capturing the {self.model.cfg.name} training step in a CUDA graph failed ({exc}); "
                "TrainConfig(cuda_graph=False) (the workflow's config key cuda_graph: false) trains it eagerly, with the same results"
            ) from exc
        self.graph = graph

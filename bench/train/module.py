"""The LightningModule of a trial, and the callback that turns an epoch into one metrics record.

Per-step Python is kept to a forward, a loss and one in-place add: sums live on the device and are read
once per epoch (an `.item()` per step would force a GPU sync every iteration).
"""

from __future__ import annotations

import time
from typing import Callable

import lightning.pytorch as L
import torch
import torch.nn.functional as F
from torch import nn

from bench import BenchError
from bench.models.fitnet import hint_loss
from bench.spec import Protocol
from bench.train.schedule import lr_at

Sink = Callable[[dict, int], None]


class Classifier(L.LightningModule):
    # Speed settings (bench/train/speed.py): extra optimizer kwargs (foreach/fused), same mathematics.
    optim_kwargs: dict = {}

    def __init__(self, model: nn.Module, protocol: Protocol, steps_per_epoch: int, eval_names: tuple[str, ...],
                 num_classes: int):
        super().__init__()
        self.model = model
        self.num_classes = num_classes
        self.protocol = protocol
        self.steps_per_epoch = steps_per_epoch
        self.eval_names = eval_names
        self.results: dict[str, float] = {}
        self._train_acc: torch.Tensor | None = None
        self._eval_acc: dict[int, torch.Tensor] = {}
        self._bad_step: torch.Tensor | None = None   # first step with a non-finite loss, -1: none yet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def configure_optimizers(self):
        o = self.protocol.optimizer
        params = [p for p in self.parameters() if p.requires_grad]
        if o.name == "rmsprop":
            opt = torch.optim.RMSprop(params, lr=o.lr, alpha=o.alpha, eps=o.eps, momentum=o.momentum,
                                      weight_decay=o.weight_decay, **self.optim_kwargs)
        else:
            opt = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                                  nesterov=o.nesterov, **self.optim_kwargs)
        # LambdaLR multiplies the base lr; lr_at returns absolute values (the warm-up lr is not a multiple).
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: lr_at(step, self.protocol, self.steps_per_epoch) / o.lr)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(x)
        return F.cross_entropy(logits, y), logits

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss, logits = self.loss(x, y)
        # new_full is a device fill; torch.tensor(n, device=cuda) would be a blocking host copy every step.
        n = loss.new_full((), y.numel())
        stats = torch.stack([loss.detach() * n, (logits.detach().argmax(1) == y).sum().to(n), n]).double()
        self._train_acc = stats if self._train_acc is None else self._train_acc + stats
        # Divergence is noticed on the device and read once per epoch (no per-step sync).
        bad = loss.new_full((), -1) if self._bad_step is None else self._bad_step
        now = loss.new_full((), self.global_step)
        self._bad_step = torch.where((bad < 0) & ~torch.isfinite(loss.detach()), now, bad)
        return loss

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        x, y = batch
        logits = self.model(x)
        loss = F.cross_entropy(logits, y, reduction="sum")
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        n = (y >= 0).sum().to(loss)   # a padded last batch (static shapes) carries ignored labels (-100)
        stats = torch.stack([loss, (top[:, 0] == y).sum().to(n), (top == y[:, None]).any(1).sum().to(n), n]).double()
        acc = self._eval_acc.get(dataloader_idx)
        self._eval_acc[dataloader_idx] = stats if acc is None else acc + stats

    def on_validation_epoch_end(self):
        for idx, acc in self._eval_acc.items():
            loss, c1, c5, n = acc.tolist()
            name = self.eval_names[idx]
            self.results[f"{name}_loss"] = loss / n
            self.results[f"{name}_error"] = 1 - c1 / n
            if self.num_classes > 5:
                self.results[f"{name}_top5_error"] = 1 - c5 / n
        self._eval_acc = {}

    def diverged_at(self) -> int | None:
        """The first step whose loss was NaN or inf, if any."""
        step = -1 if self._bad_step is None else int(self._bad_step.item())
        return step if step >= 0 else None

    def pop_train_results(self) -> dict[str, float]:
        if self._train_acc is None:
            return {}
        loss, correct, n = self._train_acc.tolist()
        self._train_acc = None
        return {"train_loss": loss / n, "train_error": 1 - correct / n}


class FitNetStudent(Classifier):
    """FitNets' two stages (Romero et al. 2014, sec. 2.2-2.3).

    Stage 1 (hint training): the student's layers up to its guided layer, plus a convolutional regressor,
    learn to predict the teacher's hint layer (L2 loss). Stage 2: knowledge distillation of the whole student,
    L = H(y, P_S) + lambda * H(P_T^tau, P_S^tau), with lambda annealed linearly (4 -> 1 in the paper).
    """

    def __init__(self, model, protocol, steps_per_epoch, eval_names, num_classes, teacher: nn.Module,
                 regressor: nn.Module, hint_steps: int, total_steps: int):
        super().__init__(model, protocol, steps_per_epoch, eval_names, num_classes)
        self.teacher = teacher.eval().requires_grad_(False)
        self.regressor = regressor
        self.hint_steps = hint_steps
        self.kd_steps = max(1, total_steps - hint_steps)

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # the teacher's BN statistics stay frozen
        return self

    def loss(self, x, y):
        step = self.global_step
        if step < self.hint_steps:
            logits, guided = self.model.forward_hint(x)
            with torch.no_grad():
                _, hint = self.teacher.forward_hint(x)
            return hint_loss(self.regressor(guided), hint), logits
        d = self.protocol.distill
        frac = min(1.0, (step - self.hint_steps) / self.kd_steps)
        lam = d.lambda_start + (d.lambda_end - d.lambda_start) * frac
        logits = self.model(x)
        with torch.no_grad():
            soft_t = F.softmax(self.teacher(x) / d.temperature, dim=1)
        soft = -(soft_t * F.log_softmax(logits / d.temperature, dim=1)).sum(1).mean()
        return F.cross_entropy(logits, y) + lam * soft, logits


class Diverged(BenchError):
    """A trial's loss became NaN or inf: a result (deep plain nets can diverge), not a fault to retry."""

    def __init__(self, step: int):
        super().__init__(f"diverged at step {step}")
        self.step = step


class EpochReporter(L.Callback):
    """Builds one record per epoch (train sums, eval results, lr, images/s) and hands it to every sink."""

    def __init__(self, sinks: list[Sink], total_steps: int, batch_size: int, sync: Callable[[], None]):
        self.sinks = sinks
        self.total_steps = total_steps
        self.batch_size = batch_size
        self.sync = sync
        self.history: list[dict] = []
        self._t0 = self._t_train = 0.0
        self._step0 = 0
        self.train_time = 0.0

    def on_train_epoch_start(self, trainer, pl_module):
        self.sync()
        self._t0, self._t_train, self._step0 = time.perf_counter(), 0.0, trainer.global_step

    def on_validation_epoch_start(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        self.sync()
        self._t_train = time.perf_counter()  # the training part of the epoch ends where evaluation starts

    def state_dict(self) -> dict:
        return {"history": self.history, "train_time": self.train_time}

    def load_state_dict(self, state: dict) -> None:
        self.history, self.train_time = list(state["history"]), float(state["train_time"])

    def replayed(self, trainer) -> bool:
        """Lightning re-enters the epoch end a checkpoint was saved in when it resumes from it."""
        return bool(self.history) and self.history[-1]["step"] == trainer.global_step

    def on_train_epoch_end(self, trainer, pl_module: Classifier):
        if self.replayed(trainer):
            return
        bad = pl_module.diverged_at()
        if bad is not None:
            raise Diverged(bad)
        self.sync()
        end = self._t_train or time.perf_counter()
        steps = trainer.global_step - self._step0
        dt = max(end - self._t0, 1e-9)
        self.train_time += dt
        rec = {"epoch": trainer.current_epoch + 1, **pl_module.pop_train_results(), **pl_module.results,
               # The lr of the epoch's last step (the optimizer already holds the next step's).
               "lr": lr_at(max(0, trainer.global_step - 1), pl_module.protocol, pl_module.steps_per_epoch),
               "images_per_sec": steps * self.batch_size / dt,
               "progress": trainer.global_step / self.total_steps}
        pl_module.results = {}
        self.history.append({"step": trainer.global_step, **rec})
        for sink in self.sinks:
            sink(rec, trainer.global_step)

"""What a trial adds to every report row besides its metrics: where it ran and what it trained.

The trainable writes exactly these keys into each row; the tables read them as the trial's context and
keep them out of the per-epoch metric history. Declared once, here, for both.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from balpoe.config import Config, format_tau_list


@dataclass(frozen=True)
class TrialContext:
    device: str            # cpu, cuda:0, …
    gpu_ids: str           # CUDA_VISIBLE_DEVICES as Ray set it
    node_id: str           # the Ray node: host names can repeat across nodes
    tau_list: str          # the recipe's key values, as the tables show them
    mixup_alpha: float
    num_experts: int
    seed: int
    precision: str
    planned_epochs: int    # the recipe's last epoch
    stop_epoch: int        # where this trial ends (`--max-t`)

    @classmethod
    def of(cls, config: Config, stop_epoch: int, device: str, gpu_ids: str, node_id: str) -> "TrialContext":
        return cls(device=device, gpu_ids=gpu_ids, node_id=node_id, tau_list=format_tau_list(config.tau_list),
                   mixup_alpha=config.mixup_alpha, num_experts=config.num_experts, seed=config.seed,
                   precision=config.precision, planned_epochs=config.epochs, stop_epoch=stop_epoch)

    def row(self) -> dict:
        return asdict(self)


CONTEXT_KEYS = frozenset(f.name for f in fields(TrialContext))

"""Typed training config: defaults are the paper recipe (CIFAR-100-LT, IR 100, standard training).

A config comes from three places, merged in this order: the dataclass defaults, a file (our own
JSON/YAML, or an official BalPoE JSON config), and command-line overrides. Every value is checked in
`validate()` so that bad input fails before any data is read or model built. Files are parsed as data
(json / yaml.safe_load), never evaluated.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATASETS = ("cifar100-lt", "cifar10-lt", "fashion-mnist-lt", "synthetic-lt")
TAU_RULES = ("limits", "uniform")


class ConfigError(ValueError):
    """A config value is impossible; the message names the field."""


@dataclass
class Config:
    # data
    dataset: str = "cifar100-lt"
    data_dir: str = "./data"
    imb_factor: float = 0.01
    val_fraction: float = 0.2
    download: bool = True
    # model
    num_experts: int = 3
    use_norm: bool = True
    norm_scale: float = 30.0
    reduce_dimension: bool = False
    # loss: one logit-adjustment τ per expert; mean τ = 1 makes the ensemble balanced
    tau_list: list[float] = field(default_factory=lambda: [0.0, 1.0, 2.0])
    mixup_alpha: float = 0.4
    # optimisation
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    batch_size: int = 128
    epochs: int = 200
    warmup_epochs: int = 5
    step1: int = 160
    step2: int = 180
    gamma: float = 0.1
    # run
    seed: int = 1
    save_dir: str = "runs/balpoe/cifar100_ir100"
    save_period: int = 50
    eval_shift_every: int = 0  # also score the shifted test sets every N epochs (0: only at the end)
    device: str = "auto"
    channels_last: bool = True
    compile: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def need(ok: bool, name: str, why: str) -> None:
            if not ok:
                raise ConfigError(f"{name}: {why} (got {getattr(self, name)!r})")

        need(self.dataset in DATASETS, "dataset", f"unknown data set; choose one of {', '.join(DATASETS)}")
        need(0 < self.imb_factor <= 1, "imb_factor", "must be in (0, 1]; 0.01 means imbalance ratio 100")
        need(0 < self.val_fraction < 1, "val_fraction", "must be in (0, 1): validation picks the best model")
        need(isinstance(self.num_experts, int) and self.num_experts >= 1, "num_experts", "must be an integer >= 1")
        need(self.norm_scale > 0, "norm_scale", "must be > 0")
        need(isinstance(self.tau_list, list) and all(_is_number(t) for t in self.tau_list),
             "tau_list", "must be a list of numbers")
        need(len(self.tau_list) == self.num_experts, "tau_list",
             f"needs one τ per expert: {len(self.tau_list)} values for num_experts={self.num_experts}")
        need(_is_number(self.mixup_alpha) and self.mixup_alpha >= 0, "mixup_alpha",
             "must be >= 0 (0 disables mixup)")
        need(self.lr > 0, "lr", "must be > 0")
        need(0 <= self.momentum < 1, "momentum", "must be in [0, 1)")
        need(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        need(isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size", "must be an integer >= 1")
        need(isinstance(self.epochs, int) and self.epochs >= 1, "epochs", "must be an integer >= 1")
        need(0 <= self.warmup_epochs <= self.epochs, "warmup_epochs", f"must be in [0, epochs={self.epochs}]")
        need(0 <= self.step1 <= self.step2, "step1", f"must be in [0, step2={self.step2}]")
        need(self.step2 <= self.epochs or self.step2 == self.step1 == self.epochs, "step2",
             f"must be <= epochs={self.epochs}")
        need(self.step1 <= self.epochs, "step1", f"must be <= epochs={self.epochs}")
        need(0 < self.gamma <= 1, "gamma", "must be in (0, 1]")
        need(isinstance(self.save_period, int) and self.save_period >= 1, "save_period", "must be an integer >= 1")
        need(isinstance(self.eval_shift_every, int) and self.eval_shift_every >= 0, "eval_shift_every",
             "must be an integer >= 0 (0: the shifted test sets only at the end of training)")
        need(isinstance(self.seed, int), "seed", "must be an integer")
        need(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda")
             or self.device == "mps", "device", "must be auto, cpu, cuda, cuda:N or mps")
        self.tau_list = [float(t) for t in self.tau_list]

    # --- conversions -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **overrides: Any) -> "Config":
        """A new validated config; see `merge`."""
        return merge(self, overrides)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


FIELD_NAMES = tuple(f.name for f in dataclasses.fields(Config))


def resolve_tau_list(spec: Any, num_experts: int, tau_min: float | None = None,
                     tau_max: float | None = None) -> list[float]:
    """τ per expert from a list, '0;1;2', or a rule: 'limits' (equidistant in [τ_min, τ_max]) or
    'uniform' (centres of K equal bins). The rules follow the official code."""
    if isinstance(spec, (list, tuple)):
        return [float(t) for t in spec]
    if not isinstance(spec, str):
        raise ConfigError(f"tau_list: expected a list, 'limits', 'uniform' or '0;1;2' (got {spec!r})")
    if spec in TAU_RULES:
        if tau_min is None or tau_max is None:
            raise ConfigError(f"tau_list: the '{spec}' rule needs tau_min and tau_max")
        if tau_min > tau_max:
            raise ConfigError(f"tau_min: must be <= tau_max (got {tau_min} > {tau_max})")
        if spec == "limits":
            if num_experts == 1:
                return [(tau_min + tau_max) / 2.0]
            return [tau_min + (tau_max - tau_min) * i / (num_experts - 1) for i in range(num_experts)]
        return [tau_min + (tau_max - tau_min) * (i + 0.5) / num_experts for i in range(num_experts)]
    try:
        return [float(t) for t in spec.replace(",", ";").split(";") if t.strip()]
    except ValueError:
        raise ConfigError(f"tau_list: expected numbers separated by ';', 'limits' or 'uniform' (got {spec!r})") from None


def format_tau_list(taus) -> str:
    """τ list as the CLI writes it (`0;1;2`): one readable, comparable value for tables and reports."""
    return ";".join(f"{float(t):g}" for t in taus)


def from_dict(values: dict[str, Any]) -> Config:
    """Our flat format. Unknown keys are an error, so a typo never silently keeps a default."""
    values = dict(values)
    unknown = sorted(set(values) - set(FIELD_NAMES) - {"tau_min", "tau_max"})
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(unknown)}; known keys: {', '.join(FIELD_NAMES)}")
    tau_min, tau_max = values.pop("tau_min", None), values.pop("tau_max", None)
    num_experts = values.get("num_experts", Config.num_experts)
    if "tau_list" in values or tau_min is not None or tau_max is not None:
        spec = values.get("tau_list", "limits")
        values["tau_list"] = resolve_tau_list(spec, num_experts, tau_min, tau_max)
    try:
        return Config(**values)
    except TypeError as err:  # a wrong type that the comparisons in validate() tripped over
        raise ConfigError(f"invalid config value: {err}") from None


SCHEDULE_FIELDS = ("warmup_epochs", "step1", "step2")


def merge(base: Config, overrides: dict[str, Any]) -> Config:
    """`base` with `overrides` applied. `tau_list` may be a rule ('limits'/'uniform'/'0;1;2').

    Changing `epochs` alone rescales the warm-up and the two LR steps in proportion (160/180 of 200
    become 8/9 of 10), so `--epochs 10` is a short run of the same recipe rather than an error; give
    any of them explicitly to pin them.
    """
    if {"tau_min", "tau_max"} & set(overrides) and overrides.get("tau_list") not in TAU_RULES:
        given = [f"--{k} {overrides[k]}" for k in ("tau_min", "tau_max") if k in overrides]
        raise ConfigError(f"tau_list: {' and '.join(given)} {'are' if len(given) > 1 else 'is'} only used by the "
                          f"'limits' or 'uniform' rule; add --tau_list limits (equidistant in [tau_min, tau_max]) "
                          f"or --tau_list uniform (bin centres)")
    values = {**base.to_dict(), **overrides}
    if "epochs" in overrides and not set(SCHEDULE_FIELDS) & set(overrides) and _is_number(overrides["epochs"]):
        ratio = overrides["epochs"] / base.epochs
        for name in SCHEDULE_FIELDS:
            old = getattr(base, name)
            values[name] = max(1 if old else 0, min(round(old * ratio), int(overrides["epochs"])))
    return from_dict(values)


# --- the official BalPoE JSON format ----------------------------------------------------------
_OFFICIAL_DATASETS = {
    "ImbalanceCIFAR100DataLoader": "cifar100-lt",
    "ImbalanceCIFAR10DataLoader": "cifar10-lt",
}
# official keys that describe the reference implementation's plumbing, not the recipe
_OFFICIAL_IGNORED = {
    "name", "n_gpu", "add_extra_info", "metrics", "arch.type", "arch.args.num_classes",
    "arch.args.returns_feat", "data_loader.type", "data_loader.args.shuffle", "data_loader.args.num_workers",
    "optimizer.type", "loss.type", "lr_scheduler.type", "trainer.verbosity", "trainer.monitor",
    "trainer.tensorboard", "combiner.type", "combiner.mode",
}
# official keys accepted only at the value the standard recipe uses
_OFFICIAL_FIXED = {
    "data_loader.args.randaugm": False, "data_loader.args.cutout": False, "data_loader.args.trivialaugm": False,
    "arch.args.share_layer2": False, "arch.args.share_layer3": False,
}
_OFFICIAL_TO_FIELD = {
    "arch.args.num_experts": "num_experts", "arch.args.use_norm": "use_norm", "arch.args.s": "norm_scale",
    "arch.args.reduce_dimension": "reduce_dimension",
    "data_loader.args.data_dir": "data_dir", "data_loader.args.batch_size": "batch_size",
    "data_loader.args.imb_factor": "imb_factor",
    "optimizer.args.lr": "lr", "optimizer.args.weight_decay": "weight_decay",
    "optimizer.args.momentum": "momentum", "optimizer.args.nesterov": "nesterov",
    "loss.args.tau_list": "tau_list", "loss.tau_min": "tau_min", "loss.tau_max": "tau_max",
    "lr_scheduler.args.step1": "step1", "lr_scheduler.args.step2": "step2",
    "lr_scheduler.args.gamma": "gamma", "lr_scheduler.args.warmup_epoch": "warmup_epochs",
    "trainer.epochs": "epochs", "trainer.save_dir": "save_dir", "trainer.save_period": "save_period",
    "combiner.mixup.alpha": "mixup_alpha",
}
FIELD_TO_OFFICIAL = {v: k for k, v in _OFFICIAL_TO_FIELD.items()}


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def is_official(tree: dict[str, Any]) -> bool:
    return "arch" in tree and "data_loader" in tree


def from_official(tree: dict[str, Any]) -> Config:
    """Import an official BalPoE config. A `balpoe` section (which our own run folders write) wins:
    it is the exact resolved config, so our `config.json` round-trips."""
    if "balpoe" in tree:
        return from_dict(tree["balpoe"])
    values: dict[str, Any] = {}
    for key, value in _flatten(tree).items():
        if key in _OFFICIAL_IGNORED:
            continue
        if key in _OFFICIAL_FIXED:
            if bool(value) != _OFFICIAL_FIXED[key]:
                raise ConfigError(f"{key}: {value!r} is not supported; the standard recipe uses {_OFFICIAL_FIXED[key]!r}")
            continue
        if key not in _OFFICIAL_TO_FIELD:
            raise ConfigError(f"unknown key in official config: {key}")
        values[_OFFICIAL_TO_FIELD[key]] = value
    loader = tree.get("data_loader", {}).get("type")
    if loader not in _OFFICIAL_DATASETS:
        raise ConfigError(f"data_loader.type: {loader!r} is not supported; choose one of {', '.join(_OFFICIAL_DATASETS)}")
    values["dataset"] = _OFFICIAL_DATASETS[loader]
    arch = tree.get("arch", {}).get("type")
    if arch != "ResNet32Model":
        raise ConfigError(f"arch.type: {arch!r} is not supported; only ResNet32Model (CIFAR) is")
    for key in ("use_norm", "reduce_dimension", "nesterov"):
        if key in values:
            values[key] = bool(values[key])
    return from_dict(values)


def to_official(config: Config) -> dict[str, Any]:
    """The official nested layout (what downstream stages read) plus our exact config under `balpoe`."""
    loader = {v: k for k, v in _OFFICIAL_DATASETS.items()}.get(config.dataset, config.dataset)
    num_classes = {"cifar100-lt": 100}.get(config.dataset, 10)
    tree: dict[str, Any] = {
        "name": Path(config.save_dir).name,
        "n_gpu": 1,
        "arch": {"type": "ResNet32Model", "args": {
            "num_classes": num_classes, "reduce_dimension": config.reduce_dimension, "use_norm": config.use_norm,
            "returns_feat": True, "num_experts": config.num_experts, "s": config.norm_scale}},
        "data_loader": {"type": loader, "args": {
            "data_dir": config.data_dir, "batch_size": config.batch_size, "shuffle": True,
            "imb_factor": config.imb_factor, "randaugm": False}},
        "optimizer": {"type": "SGD", "args": {
            "lr": config.lr, "weight_decay": config.weight_decay, "momentum": config.momentum,
            "nesterov": config.nesterov}},
        "loss": {"type": "BSExpertLoss", "tau_min": min(config.tau_list), "tau_max": max(config.tau_list),
                 "args": {"tau_list": list(config.tau_list)}},
        "lr_scheduler": {"type": "CustomLR", "args": {
            "step1": config.step1, "step2": config.step2, "gamma": config.gamma,
            "warmup_epoch": config.warmup_epochs}},
        "trainer": {"epochs": config.epochs, "save_dir": config.save_dir, "save_period": config.save_period,
                    "monitor": "max val_balanced_acc"},
        "combiner": {"type": "Combiner", "mode": "mixup", "mixup": {"alpha": config.mixup_alpha}},
        "balpoe": config.to_dict(),
    }
    return tree


def load_file(path: str | Path) -> Config:
    """Read a config file (ours or official), as data only."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml
        try:
            tree = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
    else:
        try:
            tree = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: not valid JSON: {err}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return from_official(tree) if is_official(tree) else from_dict(tree)


def save(config: Config, path: str | Path) -> None:
    Path(path).write_text(json.dumps(to_official(config), indent=2) + "\n")

"""Typed training config: defaults are the paper recipe (CIFAR-100-LT, IR 100, standard training).

A config comes from three places, merged in this order: the field defaults, a file (our own
JSON/YAML, or an official BalPoE JSON config), and command-line overrides. A `Config` is a frozen
pydantic model: every value is checked when it is built (type, finiteness, range, then how fields fit
together), so bad input fails before any data is read or model built, and nothing changes it
afterwards (`replace` returns a new one). Files are parsed as data (json / yaml.safe_load), never
evaluated.
"""
from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .datasets import DATASET_NAMES, REGISTRY
from .files import atomic_write

TAU_RULES = ("limits", "uniform")
UINT32_MAX = 2**32 - 1  # NumPy's legacy seeding takes seeds in [0, 2**32)
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:[0-9]{1,3})?")
MAX_CONFIG_BYTES = 1 << 20  # a config is a few KB; a bigger file is something else, read no further


class ConfigError(ValueError):
    """A config value is impossible; the message names the field."""


def option(default: Any, *flags: str, help: str, official: str | None = None, path: bool = False,
           **bounds: float) -> Any:
    """A recipe field and everything about it in one place: its command-line flags (official spelling
    first), help, the range it must lie in (`gt`/`ge`/`lt`/`le`), its key in the official BalPoE
    JSON configs, and whether it is a path (checked and `~`-expanded by `checked_path`). The CLI
    (`balpoe.cli`), validation and the official-JSON mapping all come from this."""
    extra = {"flags": list(flags), "help": help, "official": official, "path": path}
    if isinstance(default, list):
        return Field(default_factory=lambda: list(default), json_schema_extra=extra, **bounds)
    return Field(default, json_schema_extra=extra, **bounds)


def as_tuples(value: Any) -> Any:
    """Lists (at any depth) as tuples: JSON and the command line give lists, frozen models hold tuples."""
    return tuple(map(as_tuples, value)) if isinstance(value, list) else value


class Config(BaseModel):
    model_config = ConfigDict(frozen=True, strict=True, extra="forbid", allow_inf_nan=False,
                              validate_default=False)

    # data
    dataset: str = option("cifar100-lt", "--dataset", help=f"data set: {', '.join(DATASET_NAMES)}")
    data_dir: str = option("./data", "--data_dir", "--data-dir", official="data_loader.args.data_dir",
                           path=True, help="folder holding the data (CIFAR: cifar-*-python/); an explicit copy "
                                           "wins over the system's Fashion-MNIST")
    imb_factor: float = option(0.01, "--imb-factor", "--imb_factor", official="data_loader.args.imb_factor",
                               gt=0, le=1, help="imbalance factor f (0.01 = imbalance ratio 100)")
    val_fraction: float = option(0.2, "--val-fraction", "--val_fraction", gt=0, lt=1,
                                 help="share of each test class held out for validation")
    download: bool = option(True, "--download", help="download the data set when absent")
    # model
    num_experts: int = option(3, "--num_experts", "--num-experts", official="arch.args.num_experts", ge=1,
                              help="number of experts")
    use_norm: bool = option(True, "--use_norm", "--use-norm", official="arch.args.use_norm",
                            help="cosine classifier (1) or linear (0)")
    norm_scale: float = option(30.0, "--norm_scale", "--norm-scale", official="arch.args.s", gt=0,
                               help="cosine classifier scale s")
    reduce_dimension: bool = option(False, "--reduce_dimension", "--reduce-dimension",
                                    official="arch.args.reduce_dimension", help="narrower expert stages")
    # loss: one logit-adjustment τ per expert; mean τ = 1 makes the ensemble balanced
    tau_list: tuple[float, ...] = option((0.0, 1.0, 2.0), "--tau_list", "--tau-list", official="loss.args.tau_list",
                                   help="τ per expert: '0;1;2', 'limits' or 'uniform' (with --tau_min/--tau_max)")
    mixup_alpha: float = option(0.4, "--mixup_alpha", "--mixup-alpha", official="combiner.mixup.alpha",
                                ge=0, help="mixup α (0 disables mixup)")
    # optimisation
    lr: float = option(0.1, "--lr", "--learning_rate", "--learning-rate", official="optimizer.args.lr",
                       gt=0, help="base learning rate")
    momentum: float = option(0.9, "--momentum", official="optimizer.args.momentum", ge=0, lt=1,
                             help="SGD momentum")
    nesterov: bool = option(True, "--nesterov", official="optimizer.args.nesterov", help="Nesterov momentum")
    weight_decay: float = option(5e-4, "--wd", "--weight_decay", "--weight-decay",
                                 official="optimizer.args.weight_decay", ge=0, help="weight decay")
    batch_size: int = option(128, "--bs", "--batch_size", "--batch-size", official="data_loader.args.batch_size",
                             ge=1, help="batch size")
    epochs: int = option(200, "--epochs", official="trainer.epochs", ge=1,
                         help="epochs; changing it alone rescales warm-up and LR steps")
    warmup_epochs: int = option(5, "--warmup", "--warmup-epochs", "--warmup_epochs",
                                official="lr_scheduler.args.warmup_epoch", ge=0, help="linear warm-up epochs")
    step1: int = option(160, "--step1", official="lr_scheduler.args.step1", ge=0,
                        help="epoch of the first LR step")
    step2: int = option(180, "--step2", official="lr_scheduler.args.step2", ge=0,
                        help="epoch of the second LR step")
    gamma: float = option(0.1, "--gamma", official="lr_scheduler.args.gamma", gt=0, le=1, help="LR step factor")
    # run
    seed: int = option(1, "-s", "--seed", ge=0, le=UINT32_MAX,
                       help="run seed (model init, order, augmentation, mixup)")
    save_dir: str = option("runs/balpoe/cifar100_ir100", "--save_dir", "--save-dir", official="trainer.save_dir",
                           path=True, help="run folder")
    save_period: int = option(50, "--save_period", "--save-period", official="trainer.save_period", ge=1,
                              help="write checkpoint-epoch{N}.pth every N epochs")
    eval_shift_every: int = option(0, "--eval-shift-every", "--eval_shift_every", ge=0,
                                   help="also score the shifted test sets (shift_*) every N epochs; 0: only at the end")
    device: str = option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps")
    channels_last: bool = option(True, "--channels-last", help="channels_last memory format")
    compile: bool = option(False, "--compile", help="torch.compile the model")
    precision: str = option("fp32", "--precision", help="fp32, or bf16: forward pass under bf16 autocast; "
                            "weights, loss and metrics stay fp32")

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as err:
            raise config_error(err.errors()[0]) from None

    @field_validator("tau_list", mode="before")
    @classmethod
    def _taus_as_tuple(cls, value: Any) -> Any:
        """JSON and the CLI give a list; a tuple cannot change, so one τ per expert stays true."""
        return as_tuples(value)

    @model_validator(mode="after")
    def _fields_fit_together(self) -> "Config":
        def need(ok: bool, name: str, why: str) -> None:
            if not ok:
                raise ConfigError(f"{name}: {why} (got {getattr(self, name)!r})")

        for name in TEXT_FIELDS:
            value = getattr(self, name)
            need(value != "" and value.isprintable(), name, f"must be {FIELD_KINDS['str']}")
        need(self.dataset in DATASET_NAMES, "dataset", f"unknown data set; choose one of {', '.join(DATASET_NAMES)}")
        need(DEVICE_PATTERN.fullmatch(self.device) is not None, "device", "must be auto, cpu, cuda, cuda:N or mps")
        need(self.precision in ("fp32", "bf16"), "precision", "must be fp32 or bf16")
        need(len(self.tau_list) == self.num_experts, "tau_list",
             f"needs one τ per expert: {len(self.tau_list)} values for num_experts={self.num_experts}")
        need(self.warmup_epochs <= self.epochs, "warmup_epochs", f"must be in [0, epochs={self.epochs}]")
        need(self.step1 <= self.step2, "step1", f"must be in [0, step2={self.step2}]")
        need(self.step2 <= self.epochs or self.step2 == self.step1 == self.epochs, "step2",
             f"must be <= epochs={self.epochs}")
        need(self.step1 <= self.epochs, "step1", f"must be <= epochs={self.epochs}")
        return self

    # --- conversions -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def replace(self, **overrides: Any) -> "Config":
        """A new validated config; see `merge`."""
        return merge(self, overrides)


# annotation -> what the error says a value of it must be; JSON `true` is not an integer here
FIELD_KINDS = {
    "int": "an integer",
    "float": "a finite number",
    "bool": "true or false (1/0 on the command line)",
    "str": "a non-empty string without control characters",
    "tuple[float, ...]": "a list of finite numbers",
}
FIELD_NAMES = tuple(Config.model_fields)
# field -> its annotation as written (`float`, `tuple[float, ...]`)
FIELD_TYPES = {name: getattr(spec.annotation, "__name__", None) if isinstance(spec.annotation, type)
               else str(spec.annotation) for name, spec in Config.model_fields.items()}
FLOAT_FIELDS = tuple(name for name, kind in FIELD_TYPES.items() if kind == "float")
BOOL_FIELDS = tuple(name for name, kind in FIELD_TYPES.items() if kind == "bool")
TEXT_FIELDS = tuple(name for name, kind in FIELD_TYPES.items() if kind == "str")
PATH_FIELDS = tuple(name for name, spec in Config.model_fields.items() if spec.json_schema_extra["path"])
_BOUND_SYMBOLS = {Gt: (">", "gt"), Ge: (">=", "ge"), Lt: ("<", "lt"), Le: ("<=", "le")}


def field_default(name: str) -> Any:
    return Config.model_fields[name].get_default(call_default_factory=True)


def field_meta(name: str) -> dict[str, Any]:
    """Flags, help and official key of a recipe field."""
    return Config.model_fields[name].json_schema_extra


def describe_bounds(name: str) -> str | None:
    """A field's range as the error messages say it: `> 0`, `>= 1`, `in (0, 1]`, `in [0, 4294967295]`."""
    return bounds_text(Config.model_fields[name].metadata)


def bounds_text(metadata) -> str | None:
    """`describe_bounds` of any pydantic field's metadata (its Ge/Gt/Le/Lt constraints)."""
    limits = {}
    for item in metadata:
        for kind, (symbol, attr) in _BOUND_SYMBOLS.items():
            if isinstance(item, kind):
                limits[symbol] = _number(getattr(item, attr))
    low = next((s for s in (">", ">=") if s in limits), None)
    high = next((s for s in ("<", "<=") if s in limits), None)
    if low and high:
        return f"in {'(' if low == '>' else '['}{limits[low]}, {limits[high]}{')' if high == '<' else ']'}"
    if low:
        return f"{low} {limits[low]}"
    return f"{high} {limits[high]}" if high else None


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def config_error(first: dict[str, Any]) -> ConfigError:
    """Pydantic's (first) complaint about a config, in our words: `field: must be … (got value)`."""
    original = (first.get("ctx") or {}).get("error")
    if isinstance(original, ConfigError):  # a cross-field check: already in our words
        return original
    name = str(first["loc"][0]) if first["loc"] else "config"
    if first["type"] == "extra_forbidden":
        return ConfigError(f"unknown config key(s): {name}; known keys: {', '.join(FIELD_NAMES)}")
    if first["type"] == "missing":
        return ConfigError(f"{name}: missing")
    if first["type"] in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return ConfigError(f"{name}: must be {describe_bounds(name)} (got {first['input']!r})")
    return ConfigError(f"{name}: must be {FIELD_KINDS[FIELD_TYPES[name]]} (got {first['input']!r})")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# inputs of the τ rules ('limits'/'uniform'): options and official keys, but not fields of the config
TAU_RULE_INPUTS = {
    "tau_min": {"flags": ("--tau_min", "--tau-min"), "official": "loss.tau_min",
                "help": "smallest τ for the limits/uniform rules"},
    "tau_max": {"flags": ("--tau_max", "--tau-max"), "official": "loss.tau_max",
                "help": "largest τ for the limits/uniform rules"},
}


def resolve_tau_list(spec: Any, num_experts: int, tau_min: Any = None, tau_max: Any = None) -> list[float]:
    """τ per expert from a list, '0;1;2', or a rule: 'limits' (equidistant in [τ_min, τ_max]) or
    'uniform' (centres of K equal bins). The rules follow the official code."""
    if isinstance(spec, (list, tuple)):
        for position, tau in enumerate(spec):
            if not _is_number(tau):
                raise ConfigError(f"tau_list: item {position} must be a finite number (got {tau!r} in {list(spec)!r})")
        return [float(t) for t in spec]
    if not isinstance(spec, str):
        raise ConfigError(f"tau_list: expected a list, 'limits', 'uniform' or '0;1;2' (got {spec!r})")
    if spec in TAU_RULES:
        for name, value in (("tau_min", tau_min), ("tau_max", tau_max)):
            if value is None:
                raise ConfigError(f"{name}: the '{spec}' rule needs tau_min and tau_max (got none)")
            if not _is_number(value):
                raise ConfigError(f"{name}: must be a finite number (got {value!r})")
        if tau_min > tau_max:
            raise ConfigError(f"tau_min: must be <= tau_max (got {tau_min} > {tau_max})")
        if not _is_int(num_experts) or num_experts < 1:
            raise ConfigError(f"num_experts: must be an integer >= 1 (got {num_experts!r})")
        if spec == "limits":
            if num_experts == 1:
                return [(tau_min + tau_max) / 2.0]
            return [tau_min + (tau_max - tau_min) * i / (num_experts - 1) for i in range(num_experts)]
        return [tau_min + (tau_max - tau_min) * (i + 0.5) / num_experts for i in range(num_experts)]
    pieces = [piece.strip() for piece in spec.replace(",", ";").split(";")]
    if "" in pieces:
        raise ConfigError(f"tau_list: an empty value between separators; write numbers separated by ';' "
                          f"like '0;1;2' (got {spec!r})")
    try:
        taus = [float(piece) for piece in pieces]
    except ValueError:
        raise ConfigError(f"tau_list: expected numbers separated by ';', 'limits' or 'uniform' (got {spec!r})") from None
    if not all(math.isfinite(t) for t in taus):
        raise ConfigError(f"tau_list: every τ must be a finite number (got {spec!r})")
    return taus


def format_tau_list(taus) -> str:
    """τ list as the CLI writes it (`0;1;2`): one readable, comparable value for tables and reports."""
    return ";".join(f"{float(t):g}" for t in taus)


def path_problem(text: str) -> str | None:
    """Why `text` cannot be a path the user meant, or None: an empty one (which would silently mean the
    current folder) or a `~user` that names no user here (`expanduser` leaves it as it is)."""
    if text == "":
        return "an empty path; name a file or folder"
    if os.path.expanduser(text).startswith("~"):
        return f"{text.split('/', 1)[0]!r} names no user's home folder on this machine; write the path in full"
    return None


def checked_path(text: Any, name: str) -> Any:
    """A path as given, with `~` expanded; refused by `name` when `path_problem` finds one. The one
    checker every path goes through: command-line options, config files and our own fields alike."""
    if not isinstance(text, str):
        return text  # the field's own type check names it
    problem = path_problem(text)
    if problem:
        raise ConfigError(f"{name}: {problem} (got {text!r})")
    return os.path.expanduser(text)


def listing(names: list[str], limit: int = 8) -> str:
    """At most `limit` names, then how many more: a message stays one readable line."""
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"


def from_dict(values: dict[str, Any]) -> Config:
    """Our flat format. Unknown keys are an error, so a typo never silently keeps a default; every
    value must already have its field's type (integers are accepted for float fields). Paths have `~`
    expanded here, so a `Config` never holds one that the shell would have expanded."""
    values = dict(values)
    unknown = sorted(map(str, set(values) - set(FIELD_NAMES) - set(TAU_RULE_INPUTS)))
    if unknown:
        raise ConfigError(f"unknown config key(s): {listing(unknown)}; known keys: {', '.join(FIELD_NAMES)}")
    for name in PATH_FIELDS:
        if name in values:
            values[name] = checked_path(values[name], name)
    tau_min, tau_max = values.pop("tau_min", None), values.pop("tau_max", None)
    num_experts = values.get("num_experts", field_default("num_experts"))
    if "tau_list" in values or tau_min is not None or tau_max is not None:
        spec = values.get("tau_list", "limits")
        values["tau_list"] = resolve_tau_list(spec, num_experts, tau_min, tau_max)
    return Config(**values)


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
    epochs = overrides.get("epochs")
    if _is_int(epochs) and epochs >= 1 and not set(SCHEDULE_FIELDS) & set(overrides):
        ratio = epochs / base.epochs
        for name in SCHEDULE_FIELDS:
            old = getattr(base, name)
            values[name] = max(1 if old else 0, min(round(old * ratio), epochs))
    return from_dict(values)


# --- the official BalPoE JSON format ----------------------------------------------------------
# Every key of an official config is honoured (a field), checked (a "type", or a value the recipe fixes)
# or plumbing of the reference implementation that changes no result here (docs/bad-input.md);
# any other key is refused by name, so an official config is never trained as something else.
_OFFICIAL_LOADERS = {info.official_loader: name for name, info in REGISTRY.items() if info.official_loader}
# official key -> the values this trainer implements
_OFFICIAL_TYPES = {
    "data_loader.type": tuple(_OFFICIAL_LOADERS),
    "arch.type": ("ResNet32Model",),
    "optimizer.type": ("SGD",),
    "loss.type": ("BSExpertLoss",),
    "lr_scheduler.type": ("CustomLR",),
    "combiner.type": ("Combiner",),
    "combiner.mode": ("mixup", "default"),  # default: no mixing, mixup_alpha 0
}
_OFFICIAL_IGNORED = {
    "name", "n_gpu", "add_extra_info", "metrics", "arch.args.returns_feat", "data_loader.args.num_workers",
    "data_loader.args.retain_epoch_size", "trainer.verbosity", "trainer.monitor", "trainer.tensorboard",
}
# official keys accepted only at the value the standard recipe uses
_OFFICIAL_FIXED = {
    "data_loader.args.randaugm": False, "data_loader.args.cutout": False, "data_loader.args.trivialaugm": False,
    "data_loader.args.shuffle": True, "data_loader.args.balanced": False, "data_loader.args.training": True,
    "data_loader.args.imb_type": "exp", "arch.args.share_layer2": False, "arch.args.share_layer3": False,
    "combiner.mixup.cutmix_alpha": 0.0, "combiner.mixup.target_mix_strategy": "mix_input",
}
_OFFICIAL_TO_FIELD = {
    **{field_meta(name)["official"]: name for name in FIELD_NAMES if field_meta(name)["official"]},
    **{spec["official"]: name for name, spec in TAU_RULE_INPUTS.items()},
}
_OFFICIAL_KEYS = sorted({*_OFFICIAL_TYPES, *_OFFICIAL_IGNORED, *_OFFICIAL_FIXED, *_OFFICIAL_TO_FIELD,
                         "arch.args.num_classes"})


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def is_official(tree: dict[str, Any]) -> bool:
    return isinstance(tree.get("arch"), dict) and isinstance(tree.get("data_loader"), dict)


def _unsupported_types(tree: dict[str, Any]) -> list[str]:
    """Each section whose `type` (or the combiner's `mode`) names something this trainer does not
    implement, with the values it does. A section left out is refused too: the reference code cannot
    run without it, and our defaults in its place would train something the config never said."""
    problems = []
    for key, supported in _OFFICIAL_TYPES.items():
        section, leaf = key.split(".")
        if section not in tree:
            if leaf == "type":  # one line per section
                problems.append(f"{section}: missing; an official config names it ({key}: {', '.join(supported)})")
            continue
        if not isinstance(tree[section], dict):
            problems.append(f"{section}: expected a mapping (got {tree[section]!r:.60})")
            continue
        value = tree[section].get(leaf)
        if value not in supported:
            given = "missing" if value is None else f"{value!r} is not supported"
            problems.append(f"{key}: {given}; supported: {', '.join(supported)}")
    return problems


def _is_fixed_value(value: Any, fixed: Any) -> bool:
    if isinstance(fixed, bool):  # the official code reads 0/1 as flags
        return value is fixed or (_is_int(value) and value == fixed)
    if isinstance(fixed, (int, float)):
        return _is_number(value) and value == fixed
    return value == fixed


def _unknown_official_key(key: str) -> ConfigError:
    section = key.split(".")[0]
    known = [k for k in _OFFICIAL_KEYS if k.split(".")[0] == section]
    where = f"the keys it reads under {section}: {listing(known)}" if known else \
        f"the top-level keys it reads: {', '.join(sorted({k.split('.')[0] for k in _OFFICIAL_KEYS}))}"
    return ConfigError(f"{key}: not a key this trainer reads, so it would be ignored; {where}")


def from_official(tree: dict[str, Any]) -> Config:
    """Import an official BalPoE config. A `balpoe` section (which our own run folders write) wins:
    it is the exact resolved config, so our `config.json` round-trips."""
    if "balpoe" in tree:
        if not isinstance(tree["balpoe"], dict):
            raise ConfigError(f"balpoe: expected our config as a mapping (got {tree['balpoe']!r})")
        return from_dict(tree["balpoe"])
    problems = _unsupported_types(tree)
    if problems:
        raise ConfigError("; ".join(problems))
    loader = tree["data_loader"]["type"]
    values: dict[str, Any] = {"dataset": _OFFICIAL_LOADERS[loader]}
    classes = REGISTRY[values["dataset"]].num_classes
    for key, value in _flatten(tree).items():
        if key in _OFFICIAL_IGNORED or key in _OFFICIAL_TYPES:
            continue
        if key in _OFFICIAL_FIXED:
            if not _is_fixed_value(value, _OFFICIAL_FIXED[key]):
                raise ConfigError(f"{key}: {value!r} is not supported; this trainer implements only "
                                  f"{_OFFICIAL_FIXED[key]!r}")
            continue
        if key == "arch.args.num_classes":
            if not (_is_int(value) and value == classes):
                raise ConfigError(f"{key}: {value!r} does not match data_loader.type {loader}, which has {classes}")
            continue
        if key not in _OFFICIAL_TO_FIELD:
            raise _unknown_official_key(key)
        name = _OFFICIAL_TO_FIELD[key]
        if name in BOOL_FIELDS and _is_int(value) and value in (0, 1):  # the official code reads 0/1 as flags
            value = bool(value)
        values[name] = value
    if "combiner" in tree and tree["combiner"]["mode"] == "default":  # the reference's training without mixing
        alpha = values.get("mixup_alpha", 0)
        if alpha != 0:
            raise ConfigError(f"combiner.mixup.alpha: {alpha!r} is not used by combiner.mode 'default', which "
                              f"trains without mixup; set the mode to 'mixup' or the alpha to 0")
        values["mixup_alpha"] = 0.0
    return from_dict(values)


def _put(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


def _gpus(device: str) -> int:
    """The official `n_gpu`: 1 for a run on a CUDA GPU, 0 on a CPU (or MPS); `auto` as it resolves here."""
    if device == "auto":
        import torch  # loaded already when a run folder is written
        return int(torch.cuda.is_available())
    return int(device.startswith("cuda"))


def to_official(config: Config) -> dict[str, Any]:
    """The official nested layout (what downstream stages read) plus our exact config under `balpoe`."""
    info = REGISTRY[config.dataset]
    tree: dict[str, Any] = {
        "name": Path(config.save_dir).name, "n_gpu": _gpus(config.device),
        "arch": {"type": "ResNet32Model", "args": {"num_classes": info.num_classes, "returns_feat": True}},
        "data_loader": {"type": info.official_loader or config.dataset, "args": {"shuffle": True, "randaugm": False}},
        "optimizer": {"type": "SGD"}, "loss": {"type": "BSExpertLoss"}, "lr_scheduler": {"type": "CustomLR"},
        "trainer": {"monitor": "max val_balanced_acc"},
        "combiner": {"type": "Combiner", "mode": "mixup" if config.mixup_alpha > 0 else "default"},
    }
    for key, name in _OFFICIAL_TO_FIELD.items():
        if name in TAU_RULE_INPUTS:
            _put(tree, key, (min if name == "tau_min" else max)(config.tau_list))
        else:
            _put(tree, key, getattr(config, name))
    tree["balpoe"] = config.to_dict()
    return tree


def load_file(path: str | Path) -> Config:
    """Read a config file (ours or official), as data only."""
    path = Path(checked_path(str(path), "config"))
    if path.is_dir():
        raise ConfigError(f"config: {path} is a folder, not a config file")
    if not path.is_file():
        if path.exists():  # a device (/dev/zero), a pipe or a socket: reading it may never end
            raise ConfigError(f"config: {path} is not a regular file; name a JSON or YAML config file")
        raise ConfigError(f"config: file not found (got {str(path)!r})")
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"config: {path} holds {size:,} bytes; a config is a few KB of settings (at most "
                              f"{MAX_CONFIG_BYTES >> 20} MiB here), so this is another kind of file")
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"config: {path} is not UTF-8 text (byte {err.start}); save it as UTF-8 JSON or YAML") from None
    except OSError as err:
        raise ConfigError(f"config: {path} cannot be read ({err.strerror or err})") from None
    kind = "YAML" if path.suffix in (".yaml", ".yml") else "JSON"
    try:
        tree = _parse_yaml(text) if kind == "YAML" else json.loads(text, object_pairs_hook=_unique_keys)
    except _NotForAConfig as err:
        raise ConfigError(f"config: {path}: {err}") from None
    except ValueError as err:  # JSONDecodeError, a repeated key, an integer too long to convert
        raise ConfigError(f"config: {path} is not valid {kind}: {err}") from None
    except RecursionError:
        raise ConfigError(f"config: {path} is nested too deeply to be a config; a config is a mapping of "
                          f"settings a few levels deep") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"config: {path} must hold a mapping at the top level (got {type(tree).__name__})")
    return from_official(tree) if is_official(tree) else from_dict(tree)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A key given twice is a mistake (which one did the user mean?), not "the last one wins".
    Counted in one pass: a config of 60,000 keys is refused in milliseconds, not minutes."""
    repeated = sorted(str(key) for key, count in Counter(key for key, _ in pairs).items() if count > 1)
    if repeated:
        raise ValueError(f"key(s) {listing(repeated)} given more than once")
    return dict(pairs)


class _NotForAConfig(ValueError):
    """Valid YAML that no config needs (an alias, a key that is not a name): refused by what it is."""


def _parse_yaml(text: str) -> Any:
    """`yaml.safe_load`'s constructors (data only, no tags that build objects), bounded: no aliases
    (an "alias bomb" of a few lines expands to billions of values), keys must be names, and a key
    given twice is refused like in JSON. The file's size is capped before (MAX_CONFIG_BYTES), which
    bounds the pure-Python parser's time to seconds."""
    import yaml

    class ConfigLoader(yaml.SafeLoader):
        def construct_object(self, node, deep=False):
            if node in self.constructed_objects or node in self.recursive_objects:  # a node met again: an alias
                raise _NotForAConfig(f"the values at line {node.start_mark.line + 1} are repeated by a YAML alias "
                                     f"(*name); write them out, a config needs no anchors or aliases")
            return super().construct_object(node, deep=deep)

        def construct_mapping(self, node, deep=False):
            self.flatten_mapping(node)  # YAML merge keys (<<: {...}) as safe_load reads them
            pairs = []
            for key_node, value_node in node.value:
                key = self.construct_object(key_node, deep=deep)
                if not isinstance(key, str):
                    shown = f"a {type(key).__name__}" if isinstance(key, (list, dict)) else repr(key)
                    raise _NotForAConfig(f"line {key_node.start_mark.line + 1}: a key must be a name like lr "
                                         f"(got {shown})")
                pairs.append((key, self.construct_object(value_node, deep=deep)))
            return _unique_keys(pairs)
    try:
        return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise ValueError(str(err)) from None


def save(config: Config, path: str | Path) -> None:
    """Written whole or not at all: an interrupt never leaves half a `config.json` in a run folder."""
    text = json.dumps(to_official(config), indent=2) + "\n"
    atomic_write(Path(path), lambda tmp: tmp.write_text(text))

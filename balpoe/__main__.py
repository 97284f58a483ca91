"""`python -m balpoe` — the trainer alone, without Ray: train, evaluate, export-logits."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import config as config_module
from .config import Config, ConfigError

# config field -> (flags, type, help); the official spellings come first, dashed forms after
RECIPE_OPTIONS: dict[str, tuple[tuple[str, ...], type, str]] = {
    "dataset": (("--dataset",), str, f"data set: {', '.join(config_module.DATASETS)}"),
    "imb_factor": (("--imb-factor", "--imb_factor"), float, "imbalance factor f (0.01 = IR 100)"),
    "data_dir": (("--data_dir", "--data-dir"), str, "folder holding the data (CIFAR: cifar-*-python/)"),
    "val_fraction": (("--val-fraction", "--val_fraction"), float,
                     "share of each test class held out for validation (0.2)"),
    "seed": (("-s", "--seed"), int, "run seed (model init, order, augmentation, mixup)"),
    "epochs": (("--epochs",), int, "epochs; changing it alone rescales warm-up and LR steps"),
    "lr": (("--lr", "--learning_rate", "--learning-rate"), float, "base learning rate"),
    "weight_decay": (("--wd", "--weight_decay", "--weight-decay"), float, "weight decay"),
    "momentum": (("--momentum",), float, "SGD momentum"),
    "batch_size": (("--bs", "--batch_size", "--batch-size"), int, "batch size"),
    "step1": (("--step1",), int, "epoch of the first LR step"),
    "step2": (("--step2",), int, "epoch of the second LR step"),
    "warmup_epochs": (("--warmup", "--warmup-epochs", "--warmup_epochs"), int, "linear warm-up epochs"),
    "gamma": (("--gamma",), float, "LR step factor"),
    "num_experts": (("--num_experts", "--num-experts"), int, "number of experts"),
    "tau_list": (("--tau_list", "--tau-list"), str, "τ per expert: '0;1;2', 'limits' or 'uniform'"),
    "tau_min": (("--tau_min", "--tau-min"), float, "smallest τ for the limits/uniform rules"),
    "tau_max": (("--tau_max", "--tau-max"), float, "largest τ for the limits/uniform rules"),
    "mixup_alpha": (("--mixup_alpha", "--mixup-alpha"), float, "mixup α (0 disables mixup)"),
    "save_period": (("--save_period", "--save-period"), int, "write checkpoint-epoch{N}.pth every N epochs"),
    "eval_shift_every": (("--eval-shift-every", "--eval_shift_every"), int,
                         "also score the shifted test sets (shift_*) every N epochs; 0: only at the end"),
    "save_dir": (("--save_dir", "--save-dir"), str, "run folder"),
    "norm_scale": (("--norm_scale", "--norm-scale"), float, "cosine classifier scale s"),
    "use_norm": (("--use_norm", "--use-norm"), "bool", "cosine classifier (1) or linear (0)"),
    "reduce_dimension": (("--reduce_dimension", "--reduce-dimension"), "bool", "narrower expert stages (1/0)"),
    "device": (("--device",), str, "auto, cpu, cuda, cuda:N"),
    "channels_last": (("--channels-last",), "bool", "channels_last memory format (1/0)"),
    "compile": (("--compile",), "bool", "torch.compile the model (1/0)"),
    "download": (("--download",), "bool", "download the data set when absent (1/0)"),
}


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected 1/0 or true/false, got {text!r}")


def add_recipe_options(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """Every recipe field as an option defaulting to None (= not given); shared with `study.run`."""
    group = parser.add_argument_group("recipe overrides (defaults: the paper's CIFAR-100-LT recipe)")
    for name, (flags, kind, help_text) in RECIPE_OPTIONS.items():
        if name in skip:
            continue
        default = getattr(Config, name, None)
        shown = f" (default {default})" if default is not None and not isinstance(default, list) else ""
        group.add_argument(*flags, dest=name, type=parse_bool if kind == "bool" else kind, default=None,
                           metavar=name.upper() if kind != "bool" else "0|1", help=help_text + shown)


def recipe_overrides(args: argparse.Namespace) -> dict:
    return {name: getattr(args, name) for name in RECIPE_OPTIONS if getattr(args, name, None) is not None}


def config_from_args(args: argparse.Namespace) -> Config:
    base = config_module.load_file(args.config) if getattr(args, "config", None) else Config()
    return base.replace(**recipe_overrides(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m balpoe", description="BalPoE trainer (no Ray): train, evaluate a checkpoint, export "
        "per-expert logits. Defaults reproduce the paper's CIFAR-100-LT IR-100 recipe.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train from defaults, a config file, or resume a checkpoint",
                           description="Train BalPoE. The run folder gets config.json, summary.csv, "
                           "checkpoint-epoch{N}.pth, model_best.pth and metrics.json.")
    train.add_argument("-c", "--config", help="our JSON/YAML config or an official BalPoE JSON config")
    train.add_argument("-r", "--resume", metavar="CHECKPOINT",
                       help="continue from checkpoint-epoch{N}.pth, in that checkpoint's run folder")
    add_recipe_options(train)

    evaluate = sub.add_parser("evaluate", help="metrics of a checkpoint, incl. the test-agnostic protocol",
                              description="Evaluate a checkpoint on the validation, test and full test "
                              "splits, and under shifted test priors (with and without prior correction).")
    evaluate.add_argument("checkpoint", help="a .pth written by `train` (e.g. model_best.pth)")
    evaluate.add_argument("--data-dir", "--data_dir", dest="data_dir", help="override the data folder")
    evaluate.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    evaluate.add_argument("--output", help="write the results as JSON here (default: next to the checkpoint)")

    export = sub.add_parser("export-logits", help="per-expert logits of every split for downstream stages",
                            description="Write, per split, per-expert logits (N, experts, classes), labels and "
                            "each sample's index in the original data set as <split>.npz, plus manifest.json "
                            "(classes, tau list, class counts, split rule, config, checkpoint SHA-256). "
                            "Readable with NumPy alone.")
    export.add_argument("checkpoint")
    export.add_argument("--output", help="the export folder (default: <checkpoint>-logits/ beside it)")
    export.add_argument("--splits", nargs="+", default=["train", "val", "test", "test_full"],
                        choices=["train", "val", "test", "test_full"])
    export.add_argument("--data-dir", "--data_dir", dest="data_dir", help="override the data folder")
    export.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    return parser


def command_train(args: argparse.Namespace) -> int:
    from .checkpoint import RunFolder, load_checkpoint
    from .progress import EpochPrinter
    from .trainer import Trainer

    if args.resume:
        overrides = recipe_overrides(args)
        extra = sorted(set(overrides) - {"device", "data_dir"})
        if extra or args.config:
            raise ConfigError(f"--resume continues a run with its saved config; drop "
                              f"{', '.join('--' + e for e in extra) or '--config'} (only --device and "
                              f"--data-dir may change)")
        state = load_checkpoint(args.resume)
        save_dir = str(Path(args.resume).resolve().parent)
        config = config_module.from_dict(state["config"]).replace(save_dir=save_dir, **overrides)
    else:
        config = config_from_args(args)
        state = None
    trainer = Trainer(config)
    if state is not None:
        trainer.load_state_dict(state)
        print(f"resumed from {args.resume} at epoch {trainer.epoch}/{config.epochs}")
    sizes = trainer.data.description()
    print(f"{config.dataset} (IR {1 / config.imb_factor:g}): {sizes['train']} train, {sizes['val']} val, "
          f"{sizes['test']} test ({sizes['test_full']} full) images, {sizes['classes']} classes | "
          f"{config.num_experts} experts τ={config.tau_list} α={config.mixup_alpha} | device {trainer.device}")
    folder = RunFolder(config.save_dir, config, resumed_epoch=trainer.epoch)
    final = trainer.fit([folder, EpochPrinter(config.epochs)])
    print(f"test (reported split): acc {100 * final['test_acc']:.2f}  balanced {100 * final['test_balanced_acc']:.2f}  "
          f"many/medium/few {100 * final['test_many_acc']:.1f}/{100 * final['test_medium_acc']:.1f}/"
          f"{100 * final['test_few_acc']:.1f}  ECE {100 * final['test_ece']:.2f}")
    print(f"full test set (paper protocol): acc {100 * final['test_full_acc']:.2f}  "
          f"ECE {100 * final['test_full_ece']:.2f}  MCE {100 * final['test_full_mce']:.2f}")
    print(f"outputs: {folder.dir}/ (config.json, summary.csv, checkpoint-epoch*.pth, model_best.pth, metrics.json)")
    return 0


def command_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import test_agnostic
    from .checkpoint import trainer_from_checkpoint
    from .metrics import fit_temperature, reliability_bins
    trainer = trainer_from_checkpoint(args.checkpoint, args.data_dir, args.device)
    results: dict = {"checkpoint": str(args.checkpoint), "epoch": trainer.epoch}
    for split in ("val", "test", "test_full"):
        results.update(trainer.evaluate(split))
    print(f"checkpoint {args.checkpoint} (epoch {trainer.epoch})")
    print(f"{'split':>10} {'acc':>7} {'bal':>7} {'many':>7} {'medium':>7} {'few':>7} {'ECE':>7} {'MCE':>7}")
    for split in ("val", "test", "test_full"):
        r = {k.removeprefix(split + "_"): v for k, v in results.items() if k.startswith(split + "_")}
        print(f"{split:>10} " + " ".join(f"{100 * r[k]:7.2f}" for k in
                                          ("acc", "balanced_acc", "many_acc", "medium_acc", "few_acc", "ece", "mce")))
    logits, labels = trainer.predict("test_full")
    results["test_full_reliability"] = reliability_bins(logits, labels)
    results["temperature"] = fit_temperature(*trainer.predict("val"))
    rows = test_agnostic(logits, labels, trainer.data.class_counts)
    results["test_agnostic"] = rows
    print("\ntest-agnostic protocol (full test set, shifted priors)")
    print(f"{'distribution':>13} {'images':>7} {'acc':>7} {'acc+prior':>9} {'ECE':>7}")
    for row in rows:
        print(f"{row['distribution']:>13} {row['images']:>7} {100 * row['acc']:7.2f} "
              f"{100 * row['acc_prior']:9.2f} {100 * row['ece']:7.2f}")
    output = Path(args.output) if args.output else Path(args.checkpoint).with_suffix(".evaluation.json")
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults written to {output}")
    return 0


def command_export(args: argparse.Namespace) -> int:
    from .checkpoint import trainer_from_checkpoint
    from .export import export_logits
    trainer = trainer_from_checkpoint(args.checkpoint, args.data_dir, args.device)
    output = Path(args.output) if args.output else Path(args.checkpoint).with_name(
        Path(args.checkpoint).stem + "-logits")
    export_logits(trainer, args.checkpoint, output, args.splits)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .checkpoint import CheckpointError
    from .data import DataNotFoundError
    try:
        return {"train": command_train, "evaluate": command_evaluate, "export-logits": command_export}[args.command](args)
    except (ConfigError, CheckpointError, DataNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: checkpoints already written are kept; resume with --resume <checkpoint>",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""The trainer's command line (`python -m balpoe`: train, evaluate, export-logits) and the recipe
options that `study.run` shares.

Every recipe option is generated from the `Config` field metadata (flags, help, range), so a new
field is one line in `config.py`. Imports nothing heavy at module level: `--help` and every input
check run before torch is loaded. A mistake of the user's ends as `error: <field>: ...` and exit 2;
an interrupt (Ctrl-C or SIGTERM) names the last complete checkpoint.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from . import config as config_module
from .config import TAU_RULE_INPUTS, Config, ConfigError
from .datasets import DataError
from .files import writable_folder_problem

SPLITS = ("train", "val", "test", "test_full")
RUN_FILES = ("summary.csv", "model_best.pth", "metrics.json")  # with checkpoint-epoch*.pth: a run folder


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none to show (None, False, suppressed)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, argparse.SUPPRESS, []) or "(default" in (action.help or ""):
            return action.help or ""
        if isinstance(action.default, list):
            return f"{action.help} (default: {' '.join(map(str, action.default))})"
        return super()._get_help_string(action)


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected 1/0 or true/false, got {text!r}")


def recipe_options() -> dict[str, dict]:
    """Config field (or τ-rule input) -> flags, argparse type, help with its default."""
    parsers = {"int": int, "float": float, "bool": parse_bool, "str": str, "list[float]": str}
    options = {}
    for name, kind in config_module.FIELD_TYPES.items():
        default, meta = config_module.field_default(name), config_module.field_meta(name)
        shown = config_module.format_tau_list(default) if isinstance(default, list) else \
            int(default) if isinstance(default, bool) else default
        options[name] = {"flags": meta["flags"], "type": parsers[kind], "bool": kind == "bool",
                         "help": f"{meta['help']} (default: {shown})"}
    for name, spec in TAU_RULE_INPUTS.items():
        options[name] = {"flags": spec["flags"], "type": float, "bool": False, "help": spec["help"]}
    return options


def add_recipe_options(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """Every recipe field as an option defaulting to None (= not given); shared with `study.run`."""
    group = parser.add_argument_group("recipe overrides (defaults: the paper's CIFAR-100-LT recipe)")
    for name, option in recipe_options().items():
        if name not in skip:
            group.add_argument(*option["flags"], dest=name, type=option["type"], default=None,
                               metavar="0|1" if option["bool"] else name.upper(), help=option["help"])


def recipe_overrides(args: argparse.Namespace) -> dict:
    return {name: getattr(args, name) for name in recipe_options() if getattr(args, name, None) is not None}


def config_from_args(args: argparse.Namespace) -> Config:
    base = config_module.load_file(args.config) if getattr(args, "config", None) else Config()
    return base.replace(**recipe_overrides(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m balpoe", formatter_class=HelpFormatter,
        description="BalPoE trainer (no Ray): train, evaluate a checkpoint, export per-expert logits. "
                    "Defaults reproduce the paper's CIFAR-100-LT IR-100 recipe.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train from defaults, a config file, or resume a checkpoint",
                           formatter_class=HelpFormatter,
                           description="Train BalPoE. The run folder gets config.json, summary.csv, "
                           "checkpoint-epoch{N}.pth, model_best.pth and metrics.json.")
    train.add_argument("-c", "--config", help="our JSON/YAML config or an official BalPoE JSON config")
    train.add_argument("-r", "--resume", metavar="CHECKPOINT",
                       help="continue from checkpoint-epoch{N}.pth, in that checkpoint's run folder")
    add_recipe_options(train)

    evaluate = sub.add_parser("evaluate", help="metrics of a checkpoint, incl. the test-agnostic protocol",
                              formatter_class=HelpFormatter,
                              description="Evaluate a checkpoint on the validation, test and full test "
                              "splits, and under shifted test priors (with and without prior correction).")
    evaluate.add_argument("checkpoint", help="a .pth written by `train` (e.g. model_best.pth)")
    add_checkpoint_options(evaluate)
    evaluate.add_argument("--output", help="write the results as JSON here (default: <checkpoint>.evaluation.json)")

    export = sub.add_parser("export-logits", help="per-expert logits of every split for downstream stages",
                            formatter_class=HelpFormatter,
                            description="Write, per split, per-expert logits (N, experts, classes), labels and "
                            "each sample's index in the original data set as <split>.npz, plus manifest.json "
                            "(classes, tau list, class counts, split rule, config, checkpoint SHA-256). "
                            "Readable with NumPy alone.")
    export.add_argument("checkpoint", help="a .pth written by `train`")
    export.add_argument("--output", help="the export folder (default: <checkpoint>-logits/ beside it)")
    export.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS, help="splits to export")
    add_checkpoint_options(export)
    return parser


def add_checkpoint_options(parser: argparse.ArgumentParser) -> None:
    """Where a saved run's data is on this machine, and which device to use (both default to the saved ones)."""
    parser.add_argument("--data-dir", "--data_dir", dest="data_dir",
                        help="the data folder, if not where the checkpoint's run read it")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (default: the run's)")


def check_output_folder(folder: str | Path, option: str) -> None:
    problem = writable_folder_problem(folder)
    if problem:
        raise ConfigError(f"{option}: {problem} (got {str(folder)!r})")


# --- commands --------------------------------------------------------------------------------------
def command_train(args: argparse.Namespace) -> int:
    from .checkpoint import RunFolder, load_checkpoint, restore
    from .progress import BatchProgress, EpochPrinter
    from .trainer import Trainer

    if args.resume is not None:
        overrides = recipe_overrides(args)
        extra = sorted(set(overrides) - {"device", "data_dir"})
        if extra or args.config:
            raise ConfigError(f"resume: --resume continues a run with its saved config; drop "
                              f"{', '.join('--' + e for e in extra) or '--config'} (only --device and "
                              f"--data-dir may change)")
        state = load_checkpoint(args.resume)
        save_dir = str(Path(args.resume).resolve().parent)
        config = config_module.from_dict(state["config"]).replace(save_dir=save_dir, **overrides)
    else:
        config = config_from_args(args)
        state = None
    check_output_folder(config.save_dir, "save_dir")  # before the data is read, not at the first checkpoint
    if state is None:
        check_no_earlier_run(Path(config.save_dir))
    trainer = Trainer(config)
    if state is not None:
        restore(trainer, state, args.resume)
        print(f"resumed from {args.resume} at epoch {trainer.epoch}/{config.epochs}")
    sizes = trainer.data.description()
    print(f"{config.dataset} (IR {1 / config.imb_factor:g}): {sizes['train']} train, {sizes['val']} val, "
          f"{sizes['test']} test ({sizes['test_full']} full) images, {sizes['classes']} classes | "
          f"{config.num_experts} experts τ={config.tau_list} α={config.mixup_alpha} | device {trainer.device}")
    folder = RunFolder(config.save_dir, config, resumed_epoch=trainer.epoch)
    final = trainer.fit([folder, EpochPrinter(config.epochs), BatchProgress(config.epochs)])
    print(f"test (reported split): acc {100 * final['test_acc']:.2f}  balanced {100 * final['test_balanced_acc']:.2f}  "
          f"many/medium/few {100 * final['test_many_acc']:.1f}/{100 * final['test_medium_acc']:.1f}/"
          f"{100 * final['test_few_acc']:.1f}  ECE {100 * final['test_ece']:.2f}")
    print(f"full test set (paper protocol): acc {100 * final['test_full_acc']:.2f}  "
          f"ECE {100 * final['test_full_ece']:.2f}  MCE {100 * final['test_full_mce']:.2f}")
    print(f"outputs: {folder.dir}/ (config.json, summary.csv, checkpoint-epoch*.pth, model_best.pth, metrics.json)")
    return 0


def check_no_earlier_run(folder: Path) -> None:
    """A new run never writes into an earlier run's folder: its checkpoints and summary would be
    overwritten or, worse, mixed with the new run's."""
    earlier = sorted(p.name for p in folder.glob("*") if p.name in RUN_FILES or p.name.startswith("checkpoint-epoch"))
    if earlier:
        raise ConfigError(f"save_dir: {folder} already holds a run ({', '.join(earlier[:4])}); continue it with "
                          f"--resume {folder}/checkpoint-epoch<N>.pth, or choose another --save_dir")


def checkpoint_argument(path: str) -> Path:
    """The checkpoint a command reads, checked before anything is derived from its name."""
    from .checkpoint import CheckpointError
    if not path or not Path(path).name:
        raise CheckpointError(f"checkpoint: name a .pth file (got {path!r})")
    return Path(path)


def command_evaluate(args: argparse.Namespace) -> int:
    from .checkpoint import trainer_from_checkpoint
    from .evaluation import test_agnostic
    from .files import atomic_write
    from .metrics import fit_temperature, reliability_bins
    from .progress import BatchProgress
    checkpoint = checkpoint_argument(args.checkpoint)
    output = Path(args.output) if args.output else checkpoint.with_suffix(".evaluation.json")
    if output.is_dir() or output.resolve() == checkpoint.resolve():
        raise ConfigError(f"--output: {output} is {'a folder' if output.is_dir() else 'the checkpoint itself'}; "
                          f"name a .json file to write")
    check_output_folder(output.parent, "--output")
    trainer = trainer_from_checkpoint(args.checkpoint, args.data_dir, args.device)
    results: dict = {"checkpoint": str(args.checkpoint), "epoch": trainer.epoch}
    progress = [BatchProgress()]
    predictions = {split: trainer.predict(split, callbacks=progress) for split in ("val", "test", "test_full")}
    for split, (logits, labels) in predictions.items():
        results.update(trainer.split_metrics(split, logits, labels))
    print(f"checkpoint {args.checkpoint} (epoch {trainer.epoch})")
    print(f"{'split':>10} {'acc':>7} {'bal':>7} {'many':>7} {'medium':>7} {'few':>7} {'ECE':>7} {'MCE':>7}")
    for split in ("val", "test", "test_full"):
        r = {k.removeprefix(split + "_"): v for k, v in results.items() if k.startswith(split + "_")}
        print(f"{split:>10} " + " ".join(f"{100 * r[k]:7.2f}" for k in
                                          ("acc", "balanced_acc", "many_acc", "medium_acc", "few_acc", "ece", "mce")))
    logits, labels = predictions["test_full"]
    results["test_full_reliability"] = reliability_bins(logits, labels)
    results["temperature"] = fit_temperature(*predictions["val"])
    rows = test_agnostic(logits, labels, trainer.data.class_counts)
    results["test_agnostic"] = rows
    print("\ntest-agnostic protocol (full test set, shifted priors)")
    print(f"{'distribution':>13} {'images':>7} {'acc':>7} {'acc+prior':>9} {'ECE':>7}")
    for row in rows:
        print(f"{row['distribution']:>13} {row['images']:>7} {100 * row['acc']:7.2f} "
              f"{100 * row['acc_prior']:9.2f} {100 * row['ece']:7.2f}")
    text = json.dumps(results, indent=2) + "\n"
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(output, lambda tmp: tmp.write_text(text))
    print(f"\nresults written to {output}")
    return 0


def command_export(args: argparse.Namespace) -> int:
    from .checkpoint import trainer_from_checkpoint
    from .export import export_logits
    checkpoint = checkpoint_argument(args.checkpoint)
    output = Path(args.output) if args.output else checkpoint.with_name(checkpoint.stem + "-logits")
    check_output_folder(output, "--output")
    trainer = trainer_from_checkpoint(args.checkpoint, args.data_dir, args.device)
    export_logits(trainer, args.checkpoint, output, args.splits)
    return 0


def interrupted_hint(args: argparse.Namespace) -> str:
    """Where an interrupted `train` can continue from: the newest complete checkpoint, if any."""
    from .checkpoint import latest_checkpoint
    save_dir = Path(args.resume).resolve().parent if args.resume is not None else _save_dir(args)
    last = latest_checkpoint(save_dir) if save_dir else None
    if last is None:
        return f"no complete checkpoint in {save_dir or 'the run folder'} yet; run the same command again to start over"
    return f"the last complete checkpoint is {last}; continue with:\n  python -m balpoe train --resume {last}"


def _save_dir(args: argparse.Namespace) -> Path | None:
    try:
        return Path(config_from_args(args).save_dir)
    except ConfigError:
        return None


def _interrupt_on_sigterm(signum, frame) -> None:
    raise KeyboardInterrupt  # the same path as Ctrl-C: partial files removed, the hint printed


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .checkpoint import CheckpointError, CheckpointWriteError
    commands = {"train": command_train, "evaluate": command_evaluate, "export-logits": command_export}
    previous = signal.signal(signal.SIGTERM, _interrupt_on_sigterm), signal.getsignal(signal.SIGINT)
    try:
        return commands[args.command](args)
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        if isinstance(err, CheckpointWriteError):
            print(interrupted_hint(args), file=sys.stderr)
        return 2
    except OSError as err:  # the machine's, not the input's: a full disk, a folder gone, permissions
        print(f"error: {err.filename or ''}: {err.strerror or err}", file=sys.stderr)
        if args.command == "train":
            print(interrupted_hint(args), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the message short
        hint = interrupted_hint(args) if args.command == "train" else "its output is incomplete; run it again"
        print(f"\ninterrupted: {hint}", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])

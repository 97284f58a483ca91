"""The trainer's command line (`python -m balpoe`: train, evaluate, export-logits) and the recipe
options that `study.run` shares.

Every recipe option is generated from the `Config` field metadata (flags, help, range), so a new
field is one line in `config.py`. Imports nothing heavy at module level: `--help` and every input
check run before torch is loaded. A mistake of the user's ends as `error: <field>: ...` and exit 2;
an argparse mistake is the same one line, not the usage block; an interrupt (Ctrl-C or SIGTERM),
even while the modules still load, is exit 130 naming the last complete checkpoint. No command
replaces a file that it did not write itself for that purpose (`check_evaluation_output`,
`check_export_folder`, `check_run_config`).
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import shlex
import signal
import sys
from pathlib import Path
from typing import NoReturn

from . import config as config_module
from .config import TAU_RULE_INPUTS, Config, ConfigError
from .datasets import DataError
from .files import os_error_line, read_small_json, writable_folder_problem
from .shell import interpreter, shell_command

SPLITS = ("train", "val", "test", "test_full")
RUN_FILES = ("summary.csv", "model_best.pth", "metrics.json")  # with checkpoint-epoch*.pth: a run folder
EVALUATION_FORMAT = "balpoe-evaluation"  # what tells an earlier `evaluate` output from any other file


class Parser(argparse.ArgumentParser):
    """argparse whose mistakes are one line, `error: --lr: expected a number … (got 'abc')`, and a
    pointer to --help, instead of the whole usage above argparse's message. Subcommands inherit it."""

    def parse_known_args(self, args=None, namespace=None):
        self.given = list(sys.argv[1:] if args is None else args)  # to name an option as it was typed
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        named = re.fullmatch(r"argument ([^:]+): (.*)", message, flags=re.DOTALL)
        if named:  # "argument --data_dir/--data-dir: …": the option once, as typed (else its long spelling)
            flags = named[1].split("/")
            typed = [f for f in flags if any(a == f or a.startswith(f + "=") for a in getattr(self, "given", ()))]
            message = f"{(typed or [f for f in flags if f.startswith('--')] or flags)[0]}: {named[2]}"
        pasted = shlex.quote(interpreter()) + self.prog.removeprefix("python")  # works outside the venv too
        self.exit(2, f"error: {message}\n(`{pasted} --help` lists the options)\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none to show (None, False, suppressed)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, argparse.SUPPRESS, []) or "(default" in (action.help or ""):
            return action.help or ""
        if isinstance(action.default, list):
            return f"{action.help} (default: {' '.join(map(str, action.default))})"
        return super()._get_help_string(action)


def parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    fix = f"; write {int(value)}" if math.isfinite(value) and value.is_integer() else ""
    raise argparse.ArgumentTypeError(f"expected a whole number such as 128 (got {text!r}){fix}")


def parse_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number such as 0.1 or 5e-4 (got {text!r})") from None


def parse_path(text: str) -> str:
    """Every path option's type: `~` expanded, an empty path or a `~user` that names no user refused
    by the option's name (`config.path_problem`, the check config files get too)."""
    problem = config_module.path_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(f"{problem} (got {text!r})")
    return os.path.expanduser(text)


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected 1/0 or true/false (got {text!r})")


def recipe_options() -> dict[str, dict]:
    """Config field (or τ-rule input) -> flags, argparse type, help with its default."""
    parsers = {"int": parse_int, "float": parse_float, "bool": parse_bool, "str": str, "tuple[float, ...]": str}
    options = {}
    for name, kind in config_module.FIELD_TYPES.items():
        default, meta = config_module.field_default(name), config_module.field_meta(name)
        shown = config_module.format_tau_list(default) if isinstance(default, list) else \
            int(default) if isinstance(default, bool) else default
        options[name] = {"flags": meta["flags"], "type": parse_path if meta["path"] else parsers[kind],
                         "bool": kind == "bool", "help": f"{meta['help']} (default: {shown})"}
    for name, spec in TAU_RULE_INPUTS.items():
        options[name] = {"flags": spec["flags"], "type": parse_float, "bool": False, "help": spec["help"]}
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
    base = config_module.load_file(args.config) if getattr(args, "config", None) is not None else Config()
    return base.replace(**recipe_overrides(args))


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m balpoe", formatter_class=HelpFormatter,
        description="BalPoE trainer (no Ray): train, evaluate a checkpoint, export per-expert logits. "
                    "Defaults reproduce the paper's CIFAR-100-LT IR-100 recipe.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train from defaults, a config file, or resume a checkpoint",
                           formatter_class=HelpFormatter,
                           description="Train BalPoE. The run folder gets config.json, summary.csv, "
                           "checkpoint-epoch{N}.pth, model_best.pth and metrics.json.")
    train.add_argument("-c", "--config", type=parse_path, help="our JSON/YAML config or an official BalPoE JSON config")
    train.add_argument("-r", "--resume", metavar="CHECKPOINT", type=parse_path,
                       help="continue from checkpoint-epoch{N}.pth, in that checkpoint's run folder")
    add_recipe_options(train)

    evaluate = sub.add_parser("evaluate", help="metrics of a checkpoint, incl. the test-agnostic protocol",
                              formatter_class=HelpFormatter,
                              description="Evaluate a checkpoint on the validation, test and full test "
                              "splits, and under shifted test priors (with and without prior correction).")
    evaluate.add_argument("checkpoint", type=parse_path, help="a .pth written by `train` (e.g. model_best.pth)")
    add_checkpoint_options(evaluate)
    evaluate.add_argument("--output", type=parse_path,
                          help="write the results as JSON here (default: <checkpoint>.evaluation.json); an existing "
                               "file is replaced only if it is an earlier evaluation")

    export = sub.add_parser("export-logits", help="per-expert logits of every split for downstream stages",
                            formatter_class=HelpFormatter,
                            description="Write, per split, per-expert logits (N, experts, classes), labels and "
                            "each sample's index in the original data set as <split>.npz, plus manifest.json "
                            "(classes, tau list, class counts, split rule, config, checkpoint SHA-256). "
                            "Readable with NumPy alone.")
    export.add_argument("checkpoint", type=parse_path, help="a .pth written by `train`")
    export.add_argument("--output", type=parse_path, help="the export folder (default: <checkpoint>-logits/ beside "
                        "it); an earlier export there is replaced, any other file of the same name refused")
    export.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS, help="splits to export")
    add_checkpoint_options(export)
    return parser


def add_checkpoint_options(parser: argparse.ArgumentParser) -> None:
    """Where a saved run's data is on this machine, and which device to use (both default to the saved ones)."""
    parser.add_argument("--data-dir", "--data_dir", dest="data_dir", type=parse_path,
                        help="the data folder, if not where the checkpoint's run read it")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (default: the run's)")


def check_output_folder(folder: str | Path, option: str) -> None:
    problem = writable_folder_problem(folder)
    if problem:
        raise ConfigError(f"{option}: {problem} (got {str(folder)!r})")


# --- commands --------------------------------------------------------------------------------------
def command_train(args: argparse.Namespace) -> int:
    state = None
    if args.resume is None:  # a config's mistakes are answered before torch loads (seconds)
        config = config_from_args(args)
    else:
        overrides = recipe_overrides(args)
        extra = sorted(set(overrides) - {"device", "data_dir"})
        if extra or args.config is not None:
            raise ConfigError(f"resume: --resume continues a run with its saved config; drop "
                              f"{', '.join('--' + e for e in extra) or '--config'} (only --device and "
                              f"--data-dir may change)")
    from .checkpoint import RunFolder, check_run_config, load_checkpoint, restore
    from .progress import BatchProgress, EpochPrinter
    from .trainer import Trainer, check_precision, resolve_device

    if args.resume is not None:
        state = load_checkpoint(args.resume)
        save_dir = str(Path(args.resume).resolve().parent)
        config = config_module.from_dict(state["config"]).replace(save_dir=save_dir, **overrides)
    check_precision(resolve_device(config.device), config.precision)  # a GPU this machine lacks: before any file
    check_output_folder(config.save_dir, "save_dir")  # before the data is read, not at the first checkpoint
    if state is None:
        check_no_earlier_run(Path(config.save_dir))
    check_run_config(config.save_dir)
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


def latest_checkpoint(save_dir: str | Path) -> Path | None:
    """The newest complete periodic checkpoint (a partial write is named `*.pth.tmp`, so never this).
    Here, not in `checkpoint`, so that the message of an interrupt never has to import torch."""
    found = [p for p in Path(save_dir).glob("checkpoint-epoch*.pth")
             if p.stem.removeprefix("checkpoint-epoch").isdigit()]
    return max(found, key=lambda p: int(p.stem.removeprefix("checkpoint-epoch")), default=None)


def checkpoint_argument(path: str) -> Path:
    """The checkpoint a command reads, checked before anything is derived from its name."""
    from .checkpoint import CheckpointError
    if not Path(path).name:
        raise CheckpointError(f"checkpoint: name a .pth file (got {path!r})")
    return Path(path)


def check_evaluation_output(output: Path, checkpoint: Path) -> None:
    """`evaluate --output` replaces only an earlier evaluation (a JSON mapping whose "format" is
    EVALUATION_FORMAT): never the checkpoint, a config or any other file, whatever its name."""
    if output.is_dir() or output.resolve() == checkpoint.resolve():
        raise ConfigError(f"--output: {output} is {'a folder' if output.is_dir() else 'the checkpoint itself'}; "
                          f"name a .json file to write")
    if os.path.lexists(output):
        record = read_small_json(output)
        if not (isinstance(record, dict) and record.get("format") == EVALUATION_FORMAT):
            raise ConfigError(f"--output: {output} exists and is not an evaluation written by `evaluate` "
                              f"({describe_file(output)}); it is left as it is: name another file, or remove it")
    check_output_folder(output.parent, "--output")


def describe_file(path: Path) -> str:
    """What a file that would have been overwritten is, for the refusal: its kind and size."""
    if not path.is_file():
        return "not a regular file"
    kind = "a checkpoint" if path.suffix in (".pth", ".pt") else "a file"
    return f"{kind} of {path.stat().st_size:,} bytes"


def command_evaluate(args: argparse.Namespace) -> int:
    from .checkpoint import trainer_from_checkpoint
    from .evaluation import test_agnostic
    from .files import atomic_write
    from .metrics import fit_temperature, reliability_bins
    from .progress import BatchProgress
    checkpoint = checkpoint_argument(args.checkpoint)
    output = Path(args.output) if args.output is not None else checkpoint.with_suffix(".evaluation.json")
    check_evaluation_output(output, checkpoint)
    trainer = trainer_from_checkpoint(args.checkpoint, args.data_dir, args.device)
    results: dict = {"format": EVALUATION_FORMAT, "version": 1, "checkpoint": str(args.checkpoint),
                     "epoch": trainer.epoch}
    progress = [BatchProgress()]
    predictions = trainer.predict_test_set(callbacks=progress)
    for split in ("val", "test", "test_full"):
        results.update(trainer.split_metrics(split, *predictions[split]))
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
    from .export import check_export_folder, export_logits
    checkpoint = checkpoint_argument(args.checkpoint)
    output = Path(args.output) if args.output is not None else checkpoint.with_name(checkpoint.stem + "-logits")
    check_export_folder(output)
    check_output_folder(output, "--output")
    trainer = trainer_from_checkpoint(args.checkpoint, args.data_dir, args.device)
    export_logits(trainer, args.checkpoint, output, args.splits)
    return 0


def interrupted_hint(args: argparse.Namespace | None) -> str:
    """What an interrupt leaves: for `train`, the newest complete checkpoint to continue from."""
    if args is None:  # still parsing the command line
        return "nothing was written"
    if args.command != "train":
        return "its output is incomplete; run it again"
    save_dir = Path(args.resume).resolve().parent if args.resume is not None else _save_dir(args)
    last = latest_checkpoint(save_dir) if save_dir else None
    if last is None:
        return f"no complete checkpoint in {save_dir or 'the run folder'} yet; run the same command again to start over"
    return (f"the last complete checkpoint is {last}; continue with:\n  "
            f"{shell_command('balpoe', 'train', options=('--resume', str(last)))}")


def _save_dir(args: argparse.Namespace) -> Path | None:
    try:
        return Path(config_from_args(args).save_dir)
    except ConfigError:
        return None


def _interrupt_on_sigterm(signum, frame) -> None:
    raise KeyboardInterrupt  # the same path as Ctrl-C: partial files removed, the hint printed


def tolerate_unencodable_output() -> None:
    """A character the terminal's encoding lacks (τ under PYTHONIOENCODING=ascii) is written as
    `\u03c4` rather than ending `--help` or a message in a UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


def main(argv: list[str] | None = None) -> int:
    tolerate_unencodable_output()
    previous = signal.signal(signal.SIGTERM, _interrupt_on_sigterm), signal.getsignal(signal.SIGINT)
    args = None
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as done:  # --help, or a mistake argparse found (its one line is printed)
            return done.code
        return run(args)
    except KeyboardInterrupt:  # at any moment, even while torch is still being imported
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the message short
        print(f"\ninterrupted: {interrupted_hint(args)}", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])


def checkpoint_error() -> type[Exception]:
    """`CheckpointError`, imported (with torch) only when an exception reaches its `except` clause: a
    config's mistake, caught by the clause before, is answered without waiting seconds for torch."""
    from .checkpoint import CheckpointError
    return CheckpointError


def run(args: argparse.Namespace) -> int:
    """One command, its mistakes and the machine's faults turned into `error: …` lines."""
    commands = {"train": command_train, "evaluate": command_evaluate, "export-logits": command_export}
    try:
        return commands[args.command](args)
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except checkpoint_error() as err:
        from .checkpoint import CheckpointWriteError
        print(f"error: {err}", file=sys.stderr)
        if isinstance(err, CheckpointWriteError):
            print(interrupted_hint(args), file=sys.stderr)
        return 2
    except OSError as err:  # the machine's, not the input's: a full disk, a folder gone, permissions
        print(f"error: {os_error_line(err)}", file=sys.stderr)
        if args.command == "train":
            print(interrupted_hint(args), file=sys.stderr)
        return 1

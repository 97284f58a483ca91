"""`python -m study.run` — BalPoE studies on Ray Tune: baseline, search, resume, show, report, export,
dashboard, doctor.

This module is the boundary: it parses the command line, dispatches, and turns a user's mistake into
one `error: …` line with exit 2; a closed stdout (`show … | head -1`) ends a command quietly. Every input is
checked before Ray starts. The commands' modules are
imported here, when their command runs (never at start-up), so `--help` and the checks stay fast.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys

from balpoe.cli import tolerate_unencodable_output
from balpoe.config import ConfigError
from balpoe.datasets import DataError
from balpoe.files import os_error_line
from results.storage import location
from search_spaces import SpaceError

from .local_ray import default_to_token_auth
from .lock import study_lock
from .options import build_parser
from .ports import DEFAULT_DASHBOARD_PORT
from .resources import check_cluster_options, check_gpu_request
from .settings import (SETTINGS_FILE, StudyError, check_fresh, resume_command, resume_settings,
                       settings_from_args)
from .trackers import check_trackers, resumed_trackers

__all__ = ["build_parser", "main"]


def check_study_options(args) -> None:
    from .dashboard import check_page_options
    check_page_options(args.results_host, args.results_port, args.refresh, "--results-port", "--results-host",
                       probe=args.serve_results,
                       ray_dashboard_port=None if args.address else args.dashboard_port or DEFAULT_DASHBOARD_PORT)
    check_cluster_options(args)


def interrupted(settings=None, reason: str = "interrupted") -> int:
    """Ctrl-C before Tune took over (a download, Ray starting), a second one while Tune was stopping, or a
    study's stdout closed: the study stops, and can be continued once it has written its settings."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the message and the resume command through
    print(f"\n{reason}", file=sys.stderr)
    if settings is not None:
        started = (location(settings.experiment_dir) / SETTINGS_FILE).exists()
        print(resume_command(settings) if started else "nothing was written yet; run the same command again",
              file=sys.stderr)
    return 130


def output_closed(settings) -> int:
    return interrupted(settings, "stdout was closed: the study stopped")


def resume(args) -> int:
    from .driver import completed_experiment, run_study, summarise
    settings = resume_settings(args)
    given = check_trackers(args.log_to)
    if settings.kind == "search":
        from .searcher import check_optuna_storage
        check_optuna_storage(settings.experiment_dir, settings.optuna_storage)
    with study_lock(settings.experiment_dir, settings.name):
        complete = completed_experiment(settings)
        if complete is not None:
            print(f"{settings.kind} '{settings.name}' is already complete; nothing to resume")
            code = summarise(settings, complete)
            if given:  # sent from its files, as export-tracker does
                from .tracker_export import send
                code = code or send(complete, given)
            return code
        trackers = resumed_trackers(settings.trackers, given)  # probed only when the study goes on
        try:
            return run_study(settings.with_changes(trackers=tuple(map(str, trackers))), args, resume=True)
        except KeyboardInterrupt:
            return interrupted(settings)
        except BrokenPipeError:
            return output_closed(settings)


def new_study(args) -> int:
    settings = settings_from_args(args)
    check_gpu_request(settings.base.device, settings.gpus_per_trial, args)
    from .driver import run_study
    with study_lock(settings.experiment_dir, settings.name):  # held until the study ends
        check_fresh(settings)
        if settings.optuna_storage is not None:  # a database other experiments may share: this name is free there
            from .searcher import check_optuna_storage
            check_optuna_storage(settings.experiment_dir, settings.optuna_storage, new=True)
        try:
            return run_study(settings, args)
        except KeyboardInterrupt:
            return interrupted(settings)
        except BrokenPipeError:
            return output_closed(settings)


def with_free_ports(args: argparse.Namespace) -> argparse.Namespace:
    """The results page's port, when the user left it to us: the usual one, or the next free one when
    another study on this machine holds it (the Ray dashboard's port is left to Ray: `start_ray`). Ports
    given explicitly stay as given (and are checked)."""
    from .ports import free_port
    from .options import DEFAULT_PAGE_PORT
    chosen = {}
    local = not getattr(args, "address", None)
    if args.command == "dashboard":
        port_field, host_field, option, served = "port", "host", "--port", not args.stop
    else:
        port_field, host_field, option, served = "results_port", "results_host", "--results-port", args.serve_results
    if served and getattr(args, port_field, "absent") is None:
        avoid = (args.dashboard_port or DEFAULT_DASHBOARD_PORT,) if local else ()
        chosen[port_field] = free_port(getattr(args, host_field), DEFAULT_PAGE_PORT, option,
                                       "--" + host_field.replace("_", "-"), avoid)
    return argparse.Namespace(**{**vars(args), **chosen})


def dispatch(args) -> int:
    default_to_token_auth(args)
    if args.command == "doctor":
        from . import doctor
        return doctor.run(args)
    if args.command in ("show", "report", "export", "export-tracker"):
        from . import commands
        return getattr(commands, args.command.replace("-", "_"))(args)
    if args.command == "dashboard":
        from . import dashboard
        return dashboard.run(with_free_ports(args))
    args = with_free_ports(args)
    check_study_options(args)
    return resume(args) if args.command == "resume" else new_study(args)


def main(argv: list[str] | None = None) -> int:
    """Exit 0 when stdout is closed before the command is done (`show … | head -1`): the reader has read
    what it wanted, which is no error. A study stops then (`output_closed`)."""
    tolerate_unencodable_output()
    try:
        code = run_command(argv)
    except BrokenPipeError:
        code = 0
    finally:
        flush_stdout()  # a --help or an end table still buffered
    return code


def flush_stdout() -> None:
    """Flush now; if stdout's reader has gone, point stdout at /dev/null, so that the interpreter's own flush
    at exit finds nowhere to fail (Python's recipe for SIGPIPE)."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def run_command(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    previous_sigint = signal.getsignal(signal.SIGINT)
    try:
        return dispatch(args)
    except BrokenPipeError:
        raise  # an OSError, but not the machine's: `main` ends quietly
    except (StudyError, ConfigError, SpaceError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the machine's, not the input's: a full disk, a folder gone, permissions
        print(f"error: {os_error_line(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return interrupted()
    finally:
        signal.signal(signal.SIGINT, previous_sigint)


if __name__ == "__main__":
    sys.exit(main())

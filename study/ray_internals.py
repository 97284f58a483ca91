"""Every private name of Ray this project uses, and why: Ray 2.60 offers no public way to do these things.

Each function here is the only place its private names appear (one exception, named here: the W&B
callback's step `WANDB_RUN_HOOK`, which `study.tracker_callbacks.WandbTrials` overrides by that name), and
tests/test_ray_internals.py fails when a Ray upgrade removes or changes one of them; pyproject.toml pins Ray for them (docs/architecture.md,
"Pins on private APIs"). Everything else in the project uses Ray's public (or developer) API only.
"""
from __future__ import annotations

import contextlib
import copy
import sys
from typing import Callable, NamedTuple

# modules that import the gRPC port function by name, so they hold their own reference to it
GRPC_PORT_HOLDERS = ("ray.serve._private.replica",)


@contextlib.contextmanager
def cluster_mode_off():
    """While this lasts, Ray picks loopback as a new node's IP address.

    On Linux Ray always picks the LAN address (even `_node_ip_address="127.0.0.1"` is rewritten); only with
    `ray_constants.ENABLE_RAY_CLUSTER` false (its default on macOS/Windows) does `get_node_ip_address()`
    answer loopback. The driver alone decides the IP and hands it to every process it starts, so flipping the
    flag in this process for the duration of `ray.init` is enough; it is restored even when `ray.init` fails."""
    from ray._private import ray_constants
    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


def cluster_mode() -> bool:
    """The flag `cluster_mode_off` flips (for checks that it was put back)."""
    from ray._private import ray_constants
    return ray_constants.ENABLE_RAY_CLUSTER


class GrpcPortFunctions(NamedTuple):
    add_port: Callable        # tls_utils.add_port_to_grpc_server(server, "host:port") -> port
    build_address: Callable   # network_utils.build_address(host, port) -> "host:port" ("[::1]:port" for IPv6)


def grpc_port_functions() -> GrpcPortFunctions | None:
    """The function through which Ray's Python code opens every gRPC server port (it binds "[::]:0", all
    interfaces, for e.g. each Serve replica's server), and Ray's address formatter; None on a Ray without
    them, where a worker must still start."""
    try:
        from ray._common import network_utils, tls_utils
        return GrpcPortFunctions(tls_utils.add_port_to_grpc_server, network_utils.build_address)
    except (ImportError, AttributeError):
        return None


def replace_grpc_add_port(replacement: Callable) -> None:
    """Make Ray open gRPC ports through `replacement`, also in the modules that took their own reference."""
    from ray._common import tls_utils
    tls_utils.add_port_to_grpc_server = replacement
    for module in GRPC_PORT_HOLDERS:
        if module in sys.modules:
            sys.modules[module].add_port_to_grpc_server = replacement


class ExperimentLocation(NamedTuple):
    """Where Tune keeps a trial's experiment: its storage context's filesystem, storage path and folder name."""
    filesystem: object
    storage_path: str
    folder_name: str


def experiment_location(trial) -> ExperimentLocation:
    storage = trial.storage
    return ExperimentLocation(storage.storage_filesystem, storage.storage_fs_path, storage.experiment_dir_name)


def trial_location(trial, experiment: bool = False):
    """Where a trial's folder (or its experiment's) is on the storage path: a `Path`, or a `StorePath` in an
    object store, on the very filesystem Tune writes it through."""
    from results.storage import on_filesystem
    storage = trial.storage
    return on_filesystem(storage.storage_filesystem, storage.experiment_fs_path if experiment else storage.trial_fs_path)


def move_trial(trial, location: ExperimentLocation) -> None:
    """Put a trial that has not started into the experiment at `location`, as Tune itself re-bases the
    trials it restores (`TuneController._restore_trials`). Tune does not do so for the trials a restored
    search creates: they come from the search algorithm's pickled experiment, with the storage path of the
    experiment's first run, so a resumed copy of a folder would write them into the original."""
    storage = copy.copy(trial.storage)
    storage.storage_filesystem = location.filesystem
    storage.storage_fs_path = location.storage_path
    storage.experiment_dir_name = location.folder_name
    trial.set_storage(storage)


def asha_rung_records(scheduler) -> list[tuple[float, dict]]:
    """ASHA's rungs, `(milestone epoch, {trial_id: score × the mode's sign})`, of its one bracket.

    Tune pickles a scheduler as it was when the study started and restores none of its state, so a
    resumed search would rank its remaining trials against empty rungs; `RecordingASHA` refills these
    from what the trials reported. `AsyncHyperBandScheduler._brackets[0]._rungs` hold them."""
    [bracket] = scheduler._brackets
    return bracket._rungs


def asha_metric(scheduler) -> tuple[str, float]:
    """The metric ASHA decides on (its own, or the study's that Tune passed it) and the sign it gives a
    score before recording it (`_metric`, `_metric_op`)."""
    return scheduler._metric, scheduler._metric_op


# WandbLoggerCallback's step from the run arguments it built to the actor that logs the trial: the one place
# to set a run's name, parameters and tags (`study.tracker_callbacks.WandbTrials` overrides it by this name).
WANDB_RUN_HOOK = "_start_logging_actor"


def restored_callbacks(tuner) -> list:
    """The callbacks of a restored Tuner's run config, as the list it runs with (to edit). Tune pickles
    them with the study and `Tuner.restore` takes no new ones, so a resumed study could not be sent to a
    tracker it did not start with, and would log to its first trackers with the state they were pickled in."""
    return tuner._local_tuner.get_run_config().callbacks

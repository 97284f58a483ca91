"""What a study asks of its cluster, checked where Ray would fail late or leave trials pending forever:
the cluster options and GPU requests before Ray starts, and once it is up, that some node can run a trial."""
from __future__ import annotations

import math

from .attach import probe_address
from .ports import check_host, check_port
from .settings import StudyError


def check_cluster_options(args) -> None:
    """Cluster options that would otherwise fail inside Ray, or leave the study waiting forever."""
    interval = getattr(args, "progress_interval", 1.0)
    if not (math.isfinite(interval) and interval > 0):
        raise StudyError(f"--progress-interval: must be a number of seconds > 0 (got {interval})")
    if not (math.isfinite(args.connect_timeout) and 0 < args.connect_timeout <= 3600):
        raise StudyError(f"--connect-timeout: must be a number of seconds in (0, 3600] (got {args.connect_timeout})")
    if args.address:
        probe_address(args.address, args.connect_timeout)
        return  # the cluster's own size and ports are checked once connected
    if args.num_cpus is not None and args.num_cpus < 1:
        raise StudyError(f"--num-cpus: a local Ray needs at least 1 CPU, or no trial ever starts (got {args.num_cpus})")
    if getattr(args, "num_gpus", None) is not None and args.num_gpus < 0:
        raise StudyError(f"--num-gpus: must be >= 0 (got {args.num_gpus})")
    if args.dashboard_port is None:  # left to Ray, which takes the next free one: only the host is checked
        check_host(args.dashboard_host)
    else:
        check_port(args.dashboard_host, args.dashboard_port, "--dashboard-port",
                   "another Ray (a study already running here?) may hold it")


def check_schedulable(cpus_per_trial: float, gpus_per_trial: float, nodes: list[dict] | None = None) -> None:
    """A trial runs on one node, so some alive node must hold its CPUs and GPUs; otherwise Tune would
    leave it pending forever. `nodes` are `ray.nodes()` entries (default: the connected cluster's)."""
    if nodes is None:
        import ray
        nodes = ray.nodes()
    sizes = [n.get("Resources", {}) for n in nodes if n.get("Alive")]
    if any(r.get("CPU", 0) >= cpus_per_trial and r.get("GPU", 0) >= gpus_per_trial for r in sizes):
        return
    largest = ", ".join(sorted({f"{r.get('CPU', 0):g} CPU/{r.get('GPU', 0):g} GPU" for r in sizes})) or "none alive"
    raise StudyError(f"--cpus-per-trial/--gpus-per-trial: no node can run a trial of {cpus_per_trial:g} CPU/"
                     f"{gpus_per_trial:g} GPU (nodes: {largest}); ask for less per trial, or add a larger node")


def check_gpu_request(device: str, gpus_per_trial: float | None, args) -> None:
    """GPU requests that no trial could meet, refused before the data is read and before Ray starts:
    `--device cuda` with `--gpus-per-trial 0`, and for a local Ray (whose trials run here) `--device cuda` on
    a machine without a CUDA GPU or more GPUs per trial than it has. An `--address` cluster's GPUs are
    known once attached (`driver.resolve_resources`)."""
    cuda = device.startswith("cuda")
    if cuda and gpus_per_trial == 0:
        raise StudyError(f"--device: {device} needs a GPU in every trial; drop --device (auto) or give "
                         f"--gpus-per-trial (got --gpus-per-trial 0)")
    if args.address or not (cuda or gpus_per_trial):
        return
    import torch
    gpus_here = torch.cuda.device_count()
    if cuda and not gpus_here:
        raise StudyError(f"--device: torch sees no CUDA GPU on this machine, where a local Ray runs the trials; "
                         f"drop --device (auto), or attach to a cluster with GPUs (--address) (got {device!r})")
    declared = gpus_here if args.num_gpus is None else args.num_gpus
    if gpus_per_trial and gpus_per_trial > declared:
        fix = f"ask for at most {declared}" if declared else "drop it (the trials run on CPUs)"
        raise StudyError(f"--gpus-per-trial: {gpus_per_trial:g} per trial but a local Ray here has {declared} GPU(s); "
                         f"{fix}, or attach to a cluster with GPUs (--address)")

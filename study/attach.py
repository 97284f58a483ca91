"""Attaching to a running Ray cluster (`--address`) within a bounded time: Ray itself retries for minutes."""
from __future__ import annotations

import os
import socket
import sys
import threading

from .settings import StudyError


def probe_address(address: str, timeout_s: float) -> None:
    """Before anything else: a TCP connection to `--address` (host:port or ray://host:port), so that a
    refused or silent port is answered at once, or after `timeout_s`, not after Ray's minutes of retries."""
    if address == "auto":
        return  # Ray reads the address of the cluster started here, and says when there is none
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not (host.strip("[]") and port.isdigit() and 1 <= int(port) <= 65535):
        raise StudyError(f"--address: expected auto, HOST:PORT or ray://HOST:PORT with a port in 1…65535 "
                         f"(got {address!r})")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise StudyError(f"--address: nothing answers at {address} ({err.strerror or err}); check the cluster is "
                         f"up (`ray status --address {address}`) and the address") from None


def connect(address: str, timeout_s: float, **init_kwargs):
    """`ray.init(address=...)` that ends with a clear error within `timeout_s` instead of retrying for
    minutes (Ray keeps retrying a port that accepts connections but is no Ray). The watchdog ends the
    process with exit 2: nothing has been written yet, and Ray's retry loop cannot be interrupted.
    Callers probe the address first (`probe_address`, in `check_cluster_options`), before any work."""
    import ray
    connected = threading.Event()

    def give_up() -> None:
        if not connected.wait(timeout_s):
            print(f"error: --address: the Ray cluster at {address} did not answer within {timeout_s:g} s; check it "
                  f"with `ray status --address {address}`, or raise --connect-timeout", file=sys.stderr, flush=True)
            os._exit(2)

    threading.Thread(target=give_up, daemon=True).start()
    try:
        return ray.init(address=address, **init_kwargs)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise StudyError(f"--address: cannot attach to a Ray cluster at {address} ({err})") from None
    finally:
        connected.set()

"""Ports and hosts checked before anything listens on them, so that a taken port or a host that is no
interface here is the user's one-line mistake, not a failure inside Ray or Serve minutes later."""
from __future__ import annotations

import errno
import ipaddress
import socket
import sys

from .settings import StudyError

DEFAULT_DASHBOARD_PORT = 8265  # Ray's own


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1, "localhost", and IPv4-mapped loopback (::ffff:127.0.0.1, which dual-stack gRPC servers
    report; Python < 3.13 does not call that loopback)."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def check_port(host: str, port: int, option: str, holder: str, host_option: str = "--dashboard-host") -> None:
    """A port in range that this machine can listen on now (Ray would fail later, or pick another)."""
    if not 1 <= port <= 65535:
        raise StudyError(f"{option}: must be in 1…65535 (got {port})")
    _try_listening(host, port, option, holder, host_option)


def check_host(host: str, host_option: str = "--dashboard-host") -> None:
    """An interface of this machine, where some port is free."""
    _try_listening(host, 0, "", "", host_option)


def _try_listening(host: str, port: int, option: str, holder: str, host_option: str) -> None:
    if not host:
        raise StudyError(f"{host_option}: name an interface, e.g. 127.0.0.1 (got '')")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: closed connections don't count
        try:
            probe.bind((host, port))
        except socket.gaierror as err:
            raise StudyError(f"{host_option}: {host!r} is no address of this machine ({err.strerror})") from None
        except OSError as err:
            if err.errno == errno.EADDRNOTAVAIL:
                raise StudyError(f"{host_option}: {host} is no address of this machine ({err.strerror})") from None
            raise StudyError(f"{option}: cannot listen on {host}:{port} ({err.strerror}); {holder}: choose "
                             f"another {option}") from None


def free_port(host: str, preferred: int, option: str, host_option: str, avoid: tuple[int, ...] = ()) -> int:
    """`preferred`, or the next port this machine can listen on: a port the user left to us may be held
    by another study on the same machine, which is ordinary. Says so when it moves."""
    check_host(host, host_option)  # a host that is no interface here is the user's mistake, whatever the port
    for port in range(preferred, min(preferred + 100, 65536)):
        if port in avoid:
            continue
        try:
            check_port(host, port, option, "", host_option)
        except StudyError:  # taken
            continue
        if port != preferred:
            print(f"note: port {preferred} is taken (another study on this machine?); {option} {port} is used "
                  f"instead", file=sys.stderr)
        return port
    raise StudyError(f"{option}: no free port in {preferred}…{preferred + 99} on {host}; give one with {option}")

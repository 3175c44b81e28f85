"""A socket guard: any attempt to reach the network raises (and is recorded) instead.

Used as a pytest fixture (``no_network``, in conftest.py) and, in a process of its own, as

    python Testing/no_network.py segment CT -o OUT ...

which runs the ``ursam`` command with the guard in place from the start.
"""
from __future__ import annotations

import socket
import sys
from pathlib import Path

attempts: list[str] = []


class NetworkBlocked(OSError):
    pass


def _refuse(what: str):
    def refuse(*args, **kwargs):
        attempts.append(f"{what}{args[1:2] if what.endswith('connect') else args[:1]}")
        raise NetworkBlocked(f"network access attempted: {what}")

    return refuse


class _GuardedSocket(socket.socket):
    connect = _refuse("socket.connect")
    connect_ex = _refuse("socket.connect_ex")
    sendto = _refuse("socket.sendto")


def block(patch=None) -> None:
    """Block the network in this process (``patch(obj, name, value)`` undoes it later, e.g. pytest's
    ``monkeypatch.setattr``; by default the guard stays)."""
    patch = patch or setattr
    patch(socket, "socket", _GuardedSocket)
    patch(socket, "create_connection", _refuse("socket.create_connection"))
    patch(socket, "getaddrinfo", _refuse("socket.getaddrinfo"))


if __name__ == "__main__":
    block()
    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root))
    from URSAMLib.cli import main

    code = main(sys.argv[1:])
    if attempts:
        print(f"network attempts: {attempts}", file=sys.stderr)
        code = code or 3
    sys.exit(code)

"""Running the viewer: check the address and token, say where it is, then serve with uvicorn."""

from __future__ import annotations

import re
import secrets
import socket
import sys
import threading
import webbrowser
from dataclasses import dataclass
from typing import Callable, TextIO

from capstore.errors import InputError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
TOKEN_ENV = "CAPSTORE_SERVE_TOKEN"
GENERATE = "generate"  # ``--token`` given without a value: make one
_TOKEN = re.compile(r"[A-Za-z0-9._~-]{8,200}")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or name; ``[::1]`` too) is this machine only: 127.0.0.0/8, ::1, localhost."""
    import ipaddress

    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass
class ServeOptions:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    token: str | None = None


def check_options(host: str, port: int, token: str | None) -> ServeOptions:
    """Validated options (a made-up token where ``token`` is ``GENERATE``); one-line InputError otherwise."""
    if not 0 <= port <= 65535:
        raise InputError(f"--port {port}: give a port from 1 to 65535 (0: any free port)")
    if not host or any(c.isspace() for c in host):
        raise InputError(f"--host {host!r}: give an address or name to listen on, e.g. 127.0.0.1")
    if token == GENERATE:
        token = secrets.token_urlsafe(24)
    if token is not None and not _TOKEN.fullmatch(token):
        raise InputError("--token: use 8 to 200 letters, digits or . _ ~ - (it travels in URLs and a cookie)")
    return ServeOptions(host=host, port=port, token=token)


def address_warnings(options: ServeOptions) -> list[str]:
    """What to tell the user before serving on a non-local address."""
    if is_loopback(options.host):
        return []
    lines = [f"warning: --host {options.host} is reachable from other machines, over plain HTTP"]
    if options.token is None:
        lines.append("warning: no --token: anyone who can reach this address can read the whole store "
                     "(add --token, or set CAPSTORE_SERVE_TOKEN)")
    return lines


def url_of(options: ServeOptions, port: int | None = None) -> str:
    host = options.host
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    query = f"?token={options.token}" if options.token else ""
    return f"http://{shown}:{port if port is not None else options.port}/runs{query}"


def serve(db: str | None, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, token: str | None = None,
          open_browser: bool = False, analysis: str | None = None, say: Callable[[str], None] | None = None,
          err: TextIO | None = None) -> None:
    """Serve the store ``db`` read-only until interrupted (Ctrl-C): bound first (a port in use is one
    line), then the URL is said (with the token, if any), then uvicorn serves."""
    import uvicorn

    from capstore.analysis.duckdb_store import open_for_reading
    from capstore.serve.app import make_app

    say = say or print
    err = err or sys.stderr
    options = check_options(host, port, token)
    store = open_for_reading(db)  # a missing file or an older schema: one line, before anything listens
    try:
        app = make_app(store, token=options.token, loopback_only=is_loopback(options.host), analysis=analysis)
        sock = bind(options.host, options.port)
        for line in address_warnings(options):
            print(line, file=err)
        url = url_of(options, sock.getsockname()[1])
        say(f"capstore serve: {store.display_url} at {url} (read-only; Ctrl-C stops)")
        if open_browser:
            threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        store.dispose()


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; one-line InputError if the address cannot be had."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise InputError(f"--host {host}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)  # connections made before uvicorn's loop starts wait in the backlog
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock

"""``capstore serve``: look at runs, items and candidates in a browser (read-only)."""

from __future__ import annotations

import click

from capstore.cli.options import db_option
from capstore.serve.server import DEFAULT_HOST, DEFAULT_PORT, GENERATE, TOKEN_ENV


@click.command("serve")
@click.option("--host", default=DEFAULT_HOST, show_default=True,
              help="Address to listen on; anything but a loopback address is reachable from other machines.")
@click.option("--port", type=int, default=DEFAULT_PORT, show_default=True, help="Port (0: any free port).")
@click.option("--open", "open_browser", is_flag=True, help="Open the runs page in a web browser.")
@click.option("--token", envvar=TOKEN_ENV, is_flag=False, flag_value=GENERATE, default=None, metavar="[TOKEN]",
              help=f"Require this token on every request (alone: make one up) [env {TOKEN_ENV}].")
@click.option("--analysis", metavar="PATH|off", envvar="CAPSTORE_ANALYSIS",
              help="The analysis mirror the pages read (default beside a SQLite store, or in the cache folder); "
                   "'off' reads the store directly [env CAPSTORE_ANALYSIS].")
@db_option
def serve(host: str, port: int, open_browser: bool, token: str | None, analysis: str | None, db: str | None) -> None:
    """Serve a read-only web viewer of the store: runs, items, MILS trajectories, comparisons, SQL.

    Example: capstore serve --open
    """
    from capstore.serve.server import serve as run_server

    run_server(db, host=host, port=port, token=token, open_browser=open_browser, analysis=analysis,
               say=lambda line: click.echo(line))

"""`gastown swarm nodes|load-image`: the operator's view of the swarm agents run on, and the agent image onto
its nodes (no registry: `docker save` here, a load command per node, then a check through the swarm)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from gastown_mcp.cli._edge import Json, TownDir, emit, find_town_dir
from gastown_mcp.config import TOWN_FILE, RuntimeSection, load_settings
from gastown_mcp.errors import RuntimeUnavailable
from gastown_mcp.runtime.swarm_backend import SwarmRuntime
from gastown_mcp.runtime.swarm_images import DEFAULT_VIA, load_image, via_template
from gastown_mcp.runtime.swarm_selftest import may_place

app = typer.Typer(help='The Docker Swarm agents run on (\\[runtime] backend = "swarm").', no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="swarm")


def _town_runtime(town_dir: Path | None) -> RuntimeSection:
    """The `\\[runtime]` of the town given or found here, else the defaults."""
    here = (town_dir or Path.cwd()).expanduser()
    if town_dir is not None or (here / TOWN_FILE).is_file():
        return load_settings(find_town_dir(town_dir)).runtime
    return RuntimeSection()


@app.command("nodes")
def nodes(town_dir: TownDir = None, as_json: Json = False) -> None:
    """Every node of the swarm this engine manages: hostname, role, state, availability, address, and whether
    the town's `\\[runtime] swarm_placement` lets agents run there."""
    placement = _town_runtime(town_dir).swarm_placement
    found = [{**n, "agents": may_place(n, placement)} for n in SwarmRuntime.connect().nodes()]

    def render(console: Console) -> None:
        table = Table("hostname", "role", "state", "availability", "address", "agents")
        for n in found:
            row = [str(n[k]) for k in ("hostname", "role", "state", "availability", "address")]
            table.add_row(*row, "yes" if n["agents"] else "no")
        console.print(table)

    emit(as_json, found, render)


@app.command("load-image")
def load_image_cmd(
    image: Annotated[
        str | None, typer.Option("--image", help="The image (default: the town's \\[runtime] image).")
    ] = None,
    via: Annotated[
        str,
        typer.Option(
            "--via",
            help="Command that loads an image archive from stdin on a node; {hostname} and {address} are "
            "filled in per node (e.g. 'docker -H ssh://root@{address} load').",
        ),
    ] = DEFAULT_VIA,
    node: Annotated[
        list[str] | None, typer.Option("--node", help="Only this node (hostname); repeat for more.")
    ] = None,
    town_dir: TownDir = None,
    as_json: Json = False,
) -> None:
    """Put the agent image on every ready node but this one (no registry), then check that the swarm runs it
    there by image ID. Run it after `gastown image build` and after a node joins. Exit 1 if any node failed."""
    via_template(via)  # a bad command is refused before anything is saved
    wanted = image or _town_runtime(town_dir).image
    runtime = SwarmRuntime.connect()
    console = Console(stderr=True)
    results = load_image(runtime, wanted, via=via, nodes=node or (), progress=lambda line: console.print(line))

    def render(out: Console) -> None:
        table = Table("node", "loaded", "runs there", "detail")
        for r in results:
            ok = "[green]yes[/]" if r.present else "[red]NO[/]"
            table.add_row(r.hostname, "yes" if r.loaded else "[red]no[/]", ok, r.detail)
        out.print(table)

    emit(as_json, [r.__dict__ for r in results], render)
    failed = [r.hostname for r in results if not r.present]
    if failed:
        raise RuntimeUnavailable(
            f"image {wanted} is not usable on {', '.join(failed)}: check the --via command reaches each node "
            f"(`{via.format(hostname=failed[0], address='ADDRESS')}` by hand) and that the node has disk space"
        )

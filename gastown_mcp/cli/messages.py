"""Messages between the operator and agents: `nudge`, `mail send|ack` and `inbox`."""

from __future__ import annotations

from typing import Annotated

import typer

from gastown_mcp import console
from gastown_mcp.cli._edge import AsAgent, Json, TownDir, actor, emit, open_town

mail_app = typer.Typer(help="Send and acknowledge mail.", no_args_is_help=True)


def nudge(
    agent: Annotated[str | None, typer.Argument(help="Agent to nudge.", show_default=False)] = None,
    text: Annotated[str | None, typer.Argument(help="What it should do next.", show_default=False)] = None,
    list_: Annotated[bool, typer.Option("--list", help="List nudges and their delivery state instead.")] = False,
    to: Annotated[str | None, typer.Option("--agent", help="With --list: only nudges to this agent.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="With --list: at most this many.")] = 50,
    as_: AsAgent = None,
    town_dir: TownDir = None,
    as_json: Json = False,
) -> None:
    """Nudge an agent (delivered with its next tool result), or --list nudges: sent, delivered, acknowledged."""
    if list_:
        if agent or text:
            raise typer.BadParameter("--list takes no AGENT or TEXT; filter with --agent NAME", param_hint="--list")
        if as_:
            raise typer.BadParameter("listing nudges is for the operator; drop --as", param_hint="--as")
        with open_town(town_dir) as town:
            found = town.nudges(actor(town, None), to, limit)
        emit(as_json, found, lambda c: c.print(console.message_table(found, nudges=True)))
        return
    if not agent or not text:
        raise typer.BadParameter("pass AGENT and TEXT, or --list", param_hint="AGENT TEXT")
    with open_town(town_dir) as town:
        sent = town.nudge(actor(town, as_), agent, text)
    emit(as_json, sent, lambda c: c.print(f"nudged [bold]{sent.recipient}[/] (message {sent.id}, {sent.state.value})"))


@mail_app.command("send")
def mail_send(
    to: Annotated[str, typer.Argument(help="Recipient agent (or 'operator').")],
    subject: Annotated[str, typer.Option("--subject", "-s")] = "",
    body: Annotated[str, typer.Option("--body", "-m", help="The message.")] = "",
    thread: Annotated[str | None, typer.Option("--thread", help="Thread to reply in.")] = None,
    as_: AsAgent = None,
    town_dir: TownDir = None,
    as_json: Json = False,
) -> None:
    """Send mail to an agent."""
    with open_town(town_dir) as town:
        sent = town.mail_send(actor(town, as_), to, subject, body, thread)
    emit(as_json, sent, lambda c: c.print(f"mailed [bold]{sent.recipient}[/] (message {sent.id})"))


@mail_app.command("ack")
def mail_ack(
    ids: Annotated[list[int], typer.Argument(help="Message ids to acknowledge.")],
    as_: AsAgent = None,
    town_dir: TownDir = None,
    as_json: Json = False,
) -> None:
    """Acknowledge messages in an inbox (the operator's, or --as NAME's)."""
    with open_town(town_dir) as town:
        n = town.acknowledge(actor(town, as_), ids)
    emit(as_json, {"acknowledged": n}, lambda c: c.print(f"acknowledged {n} message(s)"))


def inbox(
    all_: Annotated[bool, typer.Option("--all", help="Include acknowledged messages.")] = False,
    limit: Annotated[int, typer.Option("--limit", "-n")] = 20,
    as_: AsAgent = None,
    town_dir: TownDir = None,
    as_json: Json = False,
) -> None:
    """Mail and nudges for the operator, or for --as NAME."""
    with open_town(town_dir) as town:
        found = town.inbox(actor(town, as_), unread_only=not all_, limit=limit)
    emit(as_json, found, lambda c: c.print(console.message_table(found)))


def register(app: typer.Typer) -> None:
    app.command("nudge")(nudge)
    app.command("inbox")(inbox)
    app.add_typer(mail_app, name="mail")

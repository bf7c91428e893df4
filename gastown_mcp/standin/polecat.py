"""The polecat script: plays a polecat under a real Claude Code, one tool call per turn.

show the bead → claim it → write a file → git add/commit → complete with the commit hash → final answer.
A description line `file: <path>` makes the work one appended line in that file instead of `<bead>.md`; a
bead the merge queue handed back (a comment asking for `git rebase main`) is rebased instead of written, keeping
both sides of an append-only conflict, then completed. The step is carried in each tool_use id and the rest is
read from the bead_show result in the conversation, so the script is stateless; any tool error ends the run.
"""

from __future__ import annotations

import json
import re
import secrets
import shlex
from dataclasses import dataclass
from typing import Any

from gastown_mcp.standin.conversation import Conversation, Text, ToolCall, ToolResult, Turn, block_text

TOOL_PREFIX = "mcp__gastown__"
STEP_ID = re.compile(r"^toolu_standin_([a-z]+)_")
EXPLICIT_BEAD = re.compile(r"\bbead(?:\s+id)?[\s:`'\"]+([a-z][a-z0-9]{0,7}-[0-9a-z]{3,16}(?:\.\d+)*)\b", re.I)
BARE_BEAD = re.compile(r"\b([a-z][a-z0-9]{0,7}-(?=[0-9a-z]*\d)[0-9a-z]{3,16}(?:\.\d+)*)\b")
COMMIT = re.compile(r"\b[0-9a-f]{40}\b")
ID_FIELDS = ("bead_id", "id", "bead")
# The one convention for "change this file": a description line `file: NOTES.md` (a relative path).
TARGET_FILE = re.compile(r"(?:^|\n|\\n)[ \t]*file:[ \t]*([A-Za-z0-9._/-]+)[ \t]*(?=$|\n|\\n|\")")
HANDED_BACK = "git rebase main"  # what the merge queue's comment asks of a bead whose branch conflicted
GIT = "git -c user.name=polecat -c user.email=polecat@gastown.local"
# Keep both sides of an append-only conflict: drop the markers, keep every line.
UNMARK = "sed -i -e '/^<<<<<<< /d' -e '/^||||||| /d' -e '/^=======$/d' -e '/^>>>>>>> /d'"


@dataclass
class Polecat:
    name: str = "polecat"

    def next_turn(self, conversation: Conversation) -> Turn:
        tools = conversation.tools
        if TOOL_PREFIX + "bead_show" not in tools:
            return _side_request(conversation)
        bead = find_bead_id(conversation)
        if bead is None:
            return Turn([Text("I could not find a bead id in my task prompt, so there is nothing to work on.")])
        calls = conversation.last_tool_uses()
        results = conversation.last_tool_results()
        step = _step(calls[-1].id) if calls else None
        if step is not None:
            failed = [r for r in results if r.is_error]
            if failed:
                return Turn(
                    [Text(f"Stopping: the {calls[-1].name} call for bead {bead} failed: {failed[0].text[:500]}")]
                )
        if step is None:
            return self._call(conversation, "show", TOOL_PREFIX + "bead_show", {"id": bead})
        if step == "show":
            return self._call(conversation, "claim", TOOL_PREFIX + "bead_claim", {"id": bead})
        shown = _result_of(conversation, "show")
        target = target_file(shown)
        if step == "claim":
            if handed_back(shown):  # the branch already holds this bead's commit: rebase it, do not redo it
                return self._call(
                    conversation, "rebase", "Bash", {"command": REBASE, "description": "Rebase onto main"}
                )
            return self._write(conversation, bead, _title(shown) or _title(_first(results, conversation)), target)
        if step == "write":
            path = target or _file_name(bead)
            cmd = (
                f"git add -- {shlex.quote(path)} && {GIT} "
                f"commit -q -m {shlex.quote(f'{bead}: work by the scripted stand-in')} && git rev-parse HEAD"
            )
            return self._call(conversation, "commit", "Bash", {"command": cmd, "description": "Commit the work"})
        if step in ("commit", "rebase"):
            found = COMMIT.findall(" ".join(r.text for r in results))
            if not found:
                return Turn([Text(f"Stopping: git {step} for bead {bead} printed no commit hash.")])
            if step == "rebase":
                summary = "Rebased my earlier commit onto main, kept both sides of any conflict (scripted stand-in)."
            elif target:
                summary = f"Appended a line to {target} and committed it (scripted stand-in)."
            else:
                summary = f"Wrote {_file_name(bead)} and committed it (scripted stand-in)."
            args = {"id": bead, "summary": summary, "commit": found[-1]}
            return self._call(conversation, "complete", TOOL_PREFIX + "bead_complete", args)
        if step == "complete":
            return Turn([Text(f"Bead {bead} is complete: {_first(results, conversation)[:300]}")])
        return Turn([Text(f"Done with bead {bead}.")])

    def _call(self, conversation: Conversation, step: str, tool: str, values: dict[str, Any]) -> Turn:
        spec = conversation.tools.get(tool)
        if spec is None:
            return Turn([Text(f"Stopping: I need the {tool} tool but it is not available to me.")])
        args = fill_arguments(spec.get("input_schema") or {}, values) if tool.startswith(TOOL_PREFIX) else values
        call_id = f"toolu_standin_{step}_{secrets.token_hex(8)}"
        return Turn([Text(f"Next: {step}."), ToolCall(name=tool, input=args, id=call_id)])

    def _write(self, conversation: Conversation, bead: str, title: str, target: str | None) -> Turn:
        if target is not None:  # append, so that two beads changing the same file meet in it
            cmd = f"printf '%s\\n' {shlex.quote(f'- {bead}: {title or bead}')} >> {shlex.quote(target)}"
            return self._call(conversation, "write", "Bash", {"command": cmd, "description": f"Append to {target}"})
        path = _file_name(bead)
        content = f"# {title or bead}\n\nWork for bead {bead}, written by the gastown scripted stand-in.\n"
        cwd = conversation.working_directory()
        if "Write" in conversation.tools and cwd:
            return self._call(conversation, "write", "Write", {"file_path": f"{cwd}/{path}", "content": content})
        cmd = f"printf %s {shlex.quote(content)} > {shlex.quote(path)}"
        return self._call(conversation, "write", "Bash", {"command": cmd, "description": "Write the work file"})


# Rebase onto the town's main; on a conflict keep both sides of each unmerged file and continue; print the new tip.
REBASE = (
    f'{{ {GIT} rebase main || {{ files=$(git diff --name-only --diff-filter=U) && [ -n "$files" ] && '
    f"{UNMARK} $files && git add -- $files && GIT_EDITOR=true {GIT} rebase --continue; }} || "
    f"{{ git rebase --abort; false; }}; }} && git rev-parse HEAD"
)


def target_file(shown: str) -> str | None:
    """The file a bead asks to change (`file: <path>` on a line of its description), if any and safe."""
    try:
        data = json.loads(shown)
    except ValueError:
        data = None
    text = str(data.get("description", "")) if isinstance(data, dict) else shown
    m = TARGET_FILE.search(text)
    if m is None:
        return None
    path = m.group(1)
    if path.startswith("/") or ".." in path.split("/"):
        return None
    return path


def handed_back(shown: str) -> bool:
    """Whether the merge queue gave this bead back because its branch conflicts with main."""
    try:
        data = json.loads(shown)
    except ValueError:
        return HANDED_BACK in shown
    comments = data.get("comments") if isinstance(data, dict) else None
    return isinstance(comments, list) and any(HANDED_BACK in str(c) for c in comments)


def find_bead_id(conversation: Conversation) -> str | None:
    texts = conversation.user_texts()
    for pattern in (EXPLICIT_BEAD, BARE_BEAD):
        for text in texts:
            m = pattern.search(text)
            if m:
                return m.group(1)
    return None


def fill_arguments(schema: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Map our values onto whatever a tool's JSON schema calls them (id / bead_id, nested result...)."""
    defs = schema.get("$defs") or schema.get("definitions") or {}
    return _fill(schema, values, defs)


def _fill(schema: dict[str, Any], values: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        schema = defs.get(str(schema["$ref"]).rsplit("/", 1)[-1], {})
    out: dict[str, Any] = {}
    props: dict[str, Any] = schema.get("properties") or {}
    for prop, sub in props.items():
        if prop in ID_FIELDS and "id" in values:
            out[prop] = values["id"]
        elif prop in values and prop != "id":
            out[prop] = values[prop]
        else:
            resolved = _resolve(sub, defs)
            if resolved.get("type") == "object" or "properties" in resolved:
                nested = _fill(resolved, values, defs)
                if nested:
                    out[prop] = nested
            elif prop in (schema.get("required") or []):
                out[prop] = ""
    return out


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return dict(defs.get(str(schema["$ref"]).rsplit("/", 1)[-1], {}))
    for key in ("anyOf", "oneOf", "allOf"):
        for option in schema.get(key) or []:
            r = _resolve(option, defs)
            if r.get("type") == "object" or "properties" in r:
                return r
    return schema


def _step(tool_use_id: str) -> str | None:
    m = STEP_ID.match(tool_use_id)
    return m.group(1) if m else None


def _result_of(conversation: Conversation, step: str) -> str:
    """The text of the latest result of this script's `step` call, read back from the conversation."""
    ids: set[str] = set()
    found = ""
    for m in conversation.messages:
        content = m.get("content")
        if not isinstance(content, list):
            continue
        for b in content:
            if not isinstance(b, dict):
                continue
            if b.get("type") == "tool_use" and _step(str(b.get("id", ""))) == step:
                ids.add(str(b.get("id")))
            elif b.get("type") == "tool_result" and b.get("tool_use_id") in ids:
                found = block_text(b.get("content", ""))
    return found


def _first(results: list[ToolResult], conversation: Conversation) -> str:
    return results[0].text if results else ""


def _title(shown: str) -> str:
    try:
        data = json.loads(shown)
    except ValueError:
        m = re.search(r'"title"\s*:\s*"([^"]+)"', shown)
        return m.group(1) if m else ""
    return str(data.get("title", "")) if isinstance(data, dict) else ""


def _file_name(bead: str) -> str:
    return f"{bead}.md"


def _side_request(conversation: Conversation) -> Turn:
    """Claude Code's helper calls (titles, command prefixes...) get a short, harmless answer."""
    text = conversation.last_user_text
    m = re.search(r"Command:\s*(.+)", text)
    if m and "prefix" in (text + conversation.system_text).lower():
        words = m.group(1).strip().split()
        return Turn([Text(" ".join(words[:2]) if words else "none")])
    return Turn([Text("Scripted stand-in: no tools needed here.")])

"""canary's report: the grid (release x patch, plus torch, install and battery columns) on the terminal, and
build/canary/report.json, report.md and report.html (a colour per verdict, each cell's error line and a link to
its log), each written atomically. :func:`write` also returns what needs a person (the exit status). With release
lines each row is named by its line (:func:`label`: ``newest: transformers==5.26.0``), the header lists each line's
pins, and the advice on the lines (move, propose, take, retire) is a section of its own."""

from __future__ import annotations

import html
import time
from pathlib import Path

from ...ground import ui
from ...ground.fsutil import atomic_write, atomic_write_json
from .replay import CANARY_DIR

# A patch needs a person when it is one of these (its replay or its verdict).
ATTENTION_REPLAY = ("conflict", "empty")
ATTENTION_VERDICT = ("landed", "partly landed", "unknown")
COLOURS = {
    "still needed": "#d9f2d9", "clean": "#d9f2d9", "ok": "#d9f2d9", "installable": "#d9f2d9",
    "3-way": "#fff3c4", "no tests": "#eeeeee", "not run": "#eeeeee", "no guards": "#eeeeee",
    "landed": "#c9e3ff", "partly landed": "#dcd0ff", "empty": "#c9e3ff",
    "unknown": "#ffd8a8", "conflict": "#ffb3b3", "not installable": "#ffb3b3", "upstream regression": "#ff8c8c",
}


def short(pid: str) -> str:
    """``accelerate/0001-foo.patch`` -> ``accelerate/0001``."""
    name, _, patch = pid.partition("/")
    return f"{name}/{patch[:4]}"


def cell_text(cell: dict) -> str:
    replay = cell.get("replay")
    return f"{replay}, {cell.get('verdict', '')}" if replay else cell.get("verdict", "")


def cell_error(cell: dict) -> str:
    """The error line a cell shows: the files of a conflict, then the tests' error line."""
    parts = [f"conflict in {', '.join(cell.get('files') or ['?'])}"] if cell.get("replay") == "conflict" else []
    return "; ".join(parts + ([cell["error"]] if cell.get("error") else []))


def cell_class(cell: dict) -> str:
    """The verdict that colours a cell: a conflict or an empty replay outranks the tests' verdict."""
    if cell.get("replay") in ATTENTION_REPLAY:
        return cell["replay"]
    return cell.get("verdict", "")


def label(c: dict) -> str:
    """A candidate's row: its releases, after its line's name when it has one."""
    return f"{c['line']}: {c['id']}" if c.get("line") else c["id"]


def pins_text(data: dict) -> str:
    """Today's pins of each line judged (one line without lines: its pins)."""
    lines = data.get("lines") or [{"line": "", "pins": data["pins"], "torch": data.get("torch")}]
    return "; ".join((f"{ln['line']} line: " if ln["line"] else "") + ", ".join(f"{n} {v}" for n, v in ln["pins"].items())
                     + (f", torch {ln['torch']} (the primary)" if ln.get("torch") else "") for ln in lines)


def attention(data: dict) -> list[str]:
    out = []
    for c in data["candidates"]:
        if c["install"]["verdict"] == "not installable":
            out.append(f"{label(c)}: not installable: {c['install'].get('error', '')}")
        elif not c.get("env_made", True):
            out.append(f"{label(c)}: no test environment: {c['env']}")
        for pid, cell in c["patches"].items():
            if cell.get("replay") in ATTENTION_REPLAY:
                where = f" ({', '.join(cell['files'])})" if cell.get("files") else ""
                out.append(f"{label(c)}: {pid}: {cell['replay']}{where}")
            if cell.get("verdict") in ATTENTION_VERDICT:
                why = f": {cell['error']}" if cell.get("error") and cell["verdict"] == "unknown" else ""
                out.append(f"{label(c)}: {pid}: {cell['verdict']}{why}")
        if c["battery"].get("verdict") == "upstream regression":
            out.append(f"{label(c)}: upstream regression: {c['battery'].get('error', '')}")
    return out


def _columns(data: dict) -> list[str]:
    cols: list[str] = []
    for c in data["candidates"]:
        cols += [p for p in c["patches"] if p not in cols]
    return cols


def grid(data: dict) -> list[list[str]]:
    cols = _columns(data)
    rows = [["release", "torch", "install", *(short(p) for p in cols), "battery"]]
    for c in data["candidates"]:
        rows.append([label(c), c.get("torch", ""), c["install"]["verdict"], *(cell_text(c["patches"].get(p, {})) for p in cols),
                     c["battery"].get("verdict", "")])
    return rows


def terminal(data: dict) -> None:
    rows = grid(data)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, r in enumerate(rows):
        ui.info("  ".join(text.ljust(w) for text, w in zip(r, widths)).rstrip())
        if n == 0:
            ui.info("  ".join("-" * w for w in widths))


def markdown(data: dict, needs: list[str]) -> str:
    rows = grid(data)
    out = [f"# headroom canary, {data['generated']}", "",
           "Pins: " + pins_text(data) + f"; reference: {data['reference'].get('env', '-')}", ""]
    if data.get("lineup"):
        out += ["## Release lines", "", *(f"- {a}" for a in data["lineup"]), ""]
    if not data["candidates"]:
        return "\n".join(out + ["Nothing new: every pin is the newest release.", ""])
    out += ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    out += ["| " + " | ".join(t.replace("|", "\\|") for t in r) + " |" for r in rows[1:]]
    out += ["", "## Needs a person" if needs else "## Nothing needs a person", ""]
    out += [f"- {a}" for a in needs]
    for c in data["candidates"]:
        out += ["", f"## {label(c)}", "", f"- torch: {c.get('torch', '-')}", f"- install: {c['install']['verdict']}" +
                (f": {c['install']['error']}" if c["install"].get("error") else "") + f" ([log]({c['install']['log']}))",
                f"- environment: {c['env']}"]
        for pid, cell in c["patches"].items():
            line = f"- `{pid}`: {cell_text(cell)}"
            if cell_error(cell):
                line += f": {cell_error(cell)}"
            if cell.get("log"):
                line += f" ([log]({cell['log']}))"
            out.append(line)
        b = c["battery"]
        out.append(f"- battery: {b.get('verdict')}" + (f": {b['error']}" if b.get("error") else "") +
                   (f" ([log]({b['log']}))" if b.get("log") else ""))
    return "\n".join(out) + "\n"


def _td(text: str, verdict: str, error: str = "", log: str = "") -> str:
    colour = COLOURS.get(verdict, "#ffffff")
    body = html.escape(text)
    if error:
        body += f'<div class="err">{html.escape(error)}</div>'
    if log:
        body += f'<div><a href="{html.escape(log, quote=True)}">log</a></div>'
    cls = "v-" + verdict.replace(" ", "-") if verdict else "v-none"
    return f'<td class="{cls}" style="background:{colour}">{body}</td>'


def page(data: dict, needs: list[str]) -> str:
    cols = _columns(data)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["release", "torch", "install", *(short(p) for p in cols), "battery"])
    rows = []
    for c in data["candidates"]:
        i = c["install"]
        torch = c.get("torch", "")
        changed = "torch" in c.get("upstreams", {})  # a torch candidate: its torch column is what is new
        cells = [f"<th>{html.escape(label(c))}</th>",
                 f'<td class="torch{" torch-new" if changed else ""}">{html.escape(torch)}</td>',
                 _td(i["verdict"], i["verdict"], i.get("error", ""), i.get("log", ""))]
        for p in cols:
            cell = c["patches"].get(p, {})
            cells.append(_td(cell_text(cell), cell_class(cell), cell_error(cell), cell.get("log", "")))
        b = c["battery"]
        cells.append(_td(b.get("verdict", ""), b.get("verdict", ""), b.get("error", ""), b.get("log", "")))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    legend = " ".join(f'<span style="background:{c}">{html.escape(v)}</span>' for v, c in COLOURS.items())
    needs_html = "".join(f"<li>{html.escape(a)}</li>" for a in needs) or "<li>nothing</li>"
    pins = html.escape(pins_text(data))
    lineup = "".join(f"<li>{html.escape(a)}</li>" for a in data.get("lineup", []))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>headroom canary</title>
<style>body{{font-family:sans-serif}} table{{border-collapse:collapse}} td,th{{border:1px solid #999;padding:4px;
vertical-align:top;font-size:13px}} td.torch-new{{font-weight:bold}} .err{{font-family:monospace;font-size:11px;max-width:28em}} span{{padding:2px 4px}}</style>
</head><body>
<h1>headroom canary</h1>
<p>{html.escape(data['generated'])}. Pins: {pins}. Reference: {html.escape(data['reference'].get('env', '-'))}.</p>
<table id="canary-grid"><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(rows)}
</tbody></table>
<h2>Needs a person</h2><ul id="attention">{needs_html}</ul>
{f'<h2>Release lines</h2><ul id="lineup">{lineup}</ul>' if lineup else ''}
<p>Legend: {legend}</p>
</body></html>
"""


def write(root: Path, data: dict) -> list[str]:
    """Print the grid, write report.json/.md/.html under build/canary/, return what needs a person."""
    out = root / CANARY_DIR
    data["generated"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    needs = attention(data)
    data["attention"] = needs
    if data["candidates"]:
        ui.step("canary", "grid (release x patch)")
        terminal(data)
    atomic_write_json(out / "report.json", data)
    atomic_write(out / "report.md", markdown(data, needs))
    atomic_write(out / "report.html", page(data, needs))
    ui.info(f"reports: {CANARY_DIR}/report.html, report.md, report.json" +
            (f"; {len(needs)} thing(s) need a person" if needs else "; nothing needs a person"))
    return needs

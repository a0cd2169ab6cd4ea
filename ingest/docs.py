"""``GET /docs``: the OpenAPI document as one page, rendered here: no scripts, nothing fetched."""

from __future__ import annotations

import re
from functools import cache
from html import escape
from typing import Any

from ingest import openapi
from ingest.dashboard import Page
from schemas.settings import Settings

_REF_PREFIX = "#/components/schemas/"
_CODE = re.compile(r"`([^`]+)`")
_CONSTRAINTS = (
    ("minLength", "min length"),
    ("maxLength", "max length"),
    ("minimum", "≥"),
    ("maximum", "≤"),
    ("maxItems", "at most items:"),
    ("uniqueItems", "distinct items"),
    ("format", "format"),
)
_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 70em; padding: 1em 2em;
       color: #1d2330; }
h2 { border-bottom: 2px solid #d7dbe3; margin-top: 2em; }
h3 { margin-bottom: .2em; } code { font-size: 92%; }
.op { border: 1px solid #d7dbe3; border-radius: 6px; margin: 1em 0; padding: .3em 1em 1em; }
.method { font-weight: 700; text-transform: uppercase; padding: 0 .4em; border-radius: 3px;
          color: #fff; background: #4a5a78; }
.get { background: #2f7d4f; } .post { background: #2f5fa8; } .put { background: #9a6a12; }
.delete { background: #a8322f; }
table { border-collapse: collapse; margin: .4em 0; } td, th { text-align: left;
        vertical-align: top; padding: .2em .8em .2em 0; border-bottom: 1px solid #eceef2; }
.extra { color: #8a4b00; } .muted { color: #5d6678; }
"""


def _prose(text: str) -> str:
    """Descriptions are Markdown-ish: only their `code` spans are rendered."""
    return _CODE.sub(r"<code>\1</code>", escape(text))


def _type(schema: dict[str, Any]) -> str:
    """A schema in a few words, components linked."""
    if "$ref" in schema:
        name = schema["$ref"].removeprefix(_REF_PREFIX)
        return f'<a href="#schema-{escape(name)}">{escape(name)}</a>'
    if "anyOf" in schema:
        return " or ".join(_type(s) for s in schema["anyOf"])
    if "const" in schema:
        return f"<code>{escape(repr(schema['const']))}</code>"
    if "enum" in schema:
        return "one of " + ", ".join(f"<code>{escape(str(v))}</code>" for v in schema["enum"])
    kind = schema.get("type")
    if kind == "array":
        return "array of " + _type(schema.get("items", {}))
    if kind is None:
        return "any JSON"
    text = escape(str(kind))
    limits = [
        f"{label} {'' if value is True else escape(str(value))}".strip()
        for key, label in _CONSTRAINTS
        if (value := schema.get(key)) is not None
    ]
    return text + (f" <span class=muted>({', '.join(limits)})</span>" if limits else "")


def _operation(path: str, method: str, op: dict[str, Any]) -> str:
    parts = [
        f'<div class=op id="{escape(op["operationId"])}">',
        f"<h3><span class='method {method}'>{method}</span> <code>{escape(path)}</code></h3>",
        f"<p><b>{escape(op['summary'])}</b>"
        + (" <span class=muted>(no key)</span>" if not op["security"] else "")
        + "</p>",
    ]
    if "description" in op:
        parts.append(f"<p>{_prose(op['description'])}</p>")
    if op.get("parameters"):
        rows = "".join(
            f"<tr><td><code>{escape(p['name'])}</code></td><td>{p['in']}</td>"
            f"<td>{_type(p['schema'])}</td><td>{'required' if p['required'] else ''}</td>"
            f"<td>{_prose(p['description'])}</td></tr>"
            for p in op["parameters"]
        )
        parts.append(f"<table><tr><th colspan=5>Parameters</th></tr>{rows}</table>")
    if "requestBody" in op:
        media, body = next(iter(op["requestBody"]["content"].items()))
        parts.append(f"<p>Body (<code>{media}</code>): {_type(body['schema'])}</p>")
    rows = ""
    for status, answer in op["responses"].items():
        content = answer.get("content", {})
        shape = ", ".join(f"{_type(c['schema'])} <code>{m}</code>" for m, c in content.items())
        flag = " class=extra" if answer.get(openapi.NOT_IN_REFERENCE) else ""
        rows += (
            f"<tr{flag}><td><b>{status}</b></td><td>{_prose(answer['description'])}</td>"
            f"<td>{shape}</td></tr>"
        )
    parts.append(f"<table><tr><th colspan=3>Responses</th></tr>{rows}</table>")
    if op.get(openapi.REFERENCE_ONLY):
        listed = ", ".join(str(s) for s in op[openapi.REFERENCE_ONLY])
        parts.append(f"<p class=muted>The reference also lists {listed}; never answered here.</p>")
    parts.append("</div>")
    return "".join(parts)


def _component(name: str, schema: dict[str, Any]) -> str:
    required = set(schema.get("required", ()))
    rows = "".join(
        f"<tr><td><code>{escape(prop)}</code></td><td>{_type(sub)}</td>"
        f"<td>{'required' if prop in required else ''}</td></tr>"
        for prop, sub in schema.get("properties", {}).items()
    )
    about = f"<p class=muted>{escape(schema['description'])}</p>" if "description" in schema else ""
    return f'<h3 id="schema-{escape(name)}">{escape(name)}</h3>{about}<table>{rows}</table>'


def render(document: dict[str, Any]) -> str:
    """The page for ``document``: operations grouped by tag, then every component."""
    by_tag: dict[str, list[str]] = {}
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            by_tag.setdefault(op["tags"][0], []).append(_operation(path, method, op))
    info = document["info"]
    sections = "".join(f"<h2>{escape(tag)}</h2>{''.join(ops)}" for tag, ops in by_tag.items())
    schemas = "".join(_component(n, s) for n, s in document["components"]["schemas"].items())
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(info['title'])}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{escape(info['title'])}</h1><p>{_prose(info['description'])}</p>"
        f'<p>Machine-readable: <a href="{openapi.PATH}">{openapi.PATH}</a> (OpenAPI '
        f"{document['openapi']}). Rows in <span class=extra>this colour</span> are answers "
        "Talon.One's reference does not list.</p>"
        f"{sections}<h2>Schemas</h2>{schemas}</body></html>"
    )


@cache
def page(settings: Settings) -> Page:
    return Page(render(openapi.build(settings)))

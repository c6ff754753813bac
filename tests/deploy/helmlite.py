"""A small renderer for the leash Helm chart, for tests on machines without `helm`.

It implements the subset of Go's text/template and of Helm's functions that the chart in
deploy/helm/leash uses, with Go's semantics:

- actions `{{ pipeline }}`, trim markers `{{-` and `-}}`, comments `{{/* */}}`;
- `if` / `else if` / `else`, `with` / `else`, `range` / `else`, `end`;
- pipelines `a | f b`, field chains `.Values.x.y`, `.`, `$`, `$.Values.x`;
- string (double-quoted and raw), integer, `true`, `false` and `nil` literals;
- functions `toYaml`, `nindent`, `indent`, `quote`, `sha256sum`, `dir`, `default`,
  `not`, `and`, `or`, `eq`, `ne`, `required`, `trim`, `lower`, `upper`, `print`.

It is stricter than Helm on purpose: printing a missing value is an error (Helm prints
an empty string), so a mistyped value path fails the tests instead of rendering "".
Values are merged like Helm does (maps deeply, a `null` removes a key) and checked
against values.schema.json.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml


class TemplateError(Exception):
    pass


_MISSING = object()


# --- lexing -----------------------------------------------------------------------------

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)


@dataclass
class _Tok:
    kind: str  # "text" or "action"
    value: str
    line: int


def _lex(src: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    for m in _ACTION.finditer(src):
        text = src[pos : m.start()]
        if m.group(1):
            text = text.rstrip(" \t\r\n")
        toks.append(_Tok("text", text, src.count("\n", 0, pos) + 1))
        toks.append(_Tok("action", m.group(2).strip(), src.count("\n", 0, m.start()) + 1))
        pos = m.end()
        if m.group(3):
            while pos < len(src) and src[pos] in " \t\r\n":
                pos += 1
    toks.append(_Tok("text", src[pos:], src.count("\n", 0, pos) + 1))
    return toks


# --- parsing ----------------------------------------------------------------------------


@dataclass
class _Node:
    kind: str  # text, out, if, with, range
    value: Any = None  # text, or the pipeline source
    line: int = 0
    body: list[_Node] = field(default_factory=list)
    orelse: list[_Node] = field(default_factory=list)


def _parse(toks: list[_Tok], name: str) -> list[_Node]:
    pos = 0

    def block(until: tuple[str, ...]) -> tuple[list[_Node], str, _Tok | None]:
        nonlocal pos
        nodes: list[_Node] = []
        while pos < len(toks):
            t = toks[pos]
            pos += 1
            if t.kind == "text":
                if t.value:
                    nodes.append(_Node("text", t.value, t.line))
                continue
            a = t.value
            if a.startswith("/*"):
                if not a.endswith("*/"):
                    raise TemplateError(f"{name}:{t.line}: unclosed comment")
                continue
            word = a.split(None, 1)[0] if a else ""
            if word in ("end", "else"):
                if word not in until:
                    raise TemplateError(f"{name}:{t.line}: unexpected {{{{ {a} }}}}")
                return nodes, a, t
            if word in ("if", "with", "range"):
                rest = a[len(word) :].strip()
                if not rest:
                    raise TemplateError(f"{name}:{t.line}: {word} needs a pipeline")
                nodes.append(control(word, rest, t.line))
                continue
            if word in ("define", "template", "block", "include"):
                raise TemplateError(f"{name}:{t.line}: {word} is outside this renderer's subset")
            nodes.append(_Node("out", a, t.line))
        if until:
            raise TemplateError(f"{name}: missing {{{{ end }}}}")
        return nodes, "", None

    def control(word: str, pipeline: str, line: int) -> _Node:
        node = _Node(word, pipeline, line)
        node.body, closer, tok = block(("end", "else"))
        if closer == "else":
            node.orelse, closer, tok = block(("end", "else"))
            if closer != "end":
                raise TemplateError(f"{name}:{tok.line}: a second else")
        elif closer.startswith("else "):
            # `else if X` (or `else with X`): a nested control that shares our end.
            sub_word, sub_rest = closer[5:].strip().split(None, 1)
            if sub_word not in ("if", "with"):
                raise TemplateError(f"{name}:{tok.line}: unsupported {{{{ {closer} }}}}")
            node.orelse = [control(sub_word, sub_rest, tok.line)]
        return node

    nodes, _, _ = block(())
    return nodes


# --- evaluation ---------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<str>"(?:[^"\\]|\\.)*")
      | (?P<raw>`[^`]*`)
      | (?P<num>-?\d+)
      | (?P<pipe>\|)
      | (?P<lpar>\()
      | (?P<rpar>\))
      | (?P<field>\$?(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\$|\.)
      | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.X,
)


def _tokens(src: str) -> list[tuple[str, str]]:
    out = []
    pos = 0
    src = src.strip()
    while pos < len(src):
        m = _TOKEN.match(src, pos)
        if not m or m.end() == pos:
            raise TemplateError(f"cannot parse {src[pos:]!r}")
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
        pos = m.end()
        while pos < len(src) and src[pos].isspace():
            pos += 1
    return out


def _truth(v: Any) -> bool:
    if v is None or v is _MISSING:
        return False
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return v != 0
    if isinstance(v, (str, list, dict, tuple)):
        return len(v) > 0
    return True


def _go_str(v: Any) -> str:
    if v is _MISSING or v is None:
        raise TemplateError("prints a missing value (Helm would print an empty string)")
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, (dict, list)):
        raise TemplateError(f"prints a {type(v).__name__}: use toYaml")
    return str(v)


def _to_yaml(v: Any) -> str:
    if v is None or v is _MISSING:
        return "null"
    return yaml.safe_dump(v, default_flow_style=False, sort_keys=True, width=1 << 20).rstrip("\n")


def _indent(n: int, s: str) -> str:
    pad = " " * n
    return pad + s.replace("\n", "\n" + pad)


def _required(msg: str, v: Any) -> Any:
    if v is None or v is _MISSING or v == "":
        raise TemplateError(msg)
    return v


_FUNCS = {
    "toYaml": _to_yaml,
    "nindent": lambda n, s: "\n" + _indent(int(n), _go_str(s)),
    "indent": lambda n, s: _indent(int(n), _go_str(s)),
    "quote": lambda *a: " ".join(json.dumps(_go_str(x)) for x in a),
    "sha256sum": lambda s: hashlib.sha256(_go_str(s).encode()).hexdigest(),
    "dir": lambda s: posixpath.dirname(_go_str(s)) or ".",
    "default": lambda d, v=_MISSING: v if _truth(v) else d,
    "not": lambda v: not _truth(v),
    "and": lambda *a: next((x for x in a if not _truth(x)), a[-1]),
    "or": lambda *a: next((x for x in a if _truth(x)), a[-1]),
    "eq": lambda a, *b: any(a == x for x in b),
    "ne": lambda a, b: a != b,
    "required": _required,
    "trim": lambda s: _go_str(s).strip(),
    "lower": lambda s: _go_str(s).lower(),
    "upper": lambda s: _go_str(s).upper(),
    "print": lambda *a: "".join(_go_str(x) for x in a),
}


class _Scope:
    def __init__(self, root: Any, dot: Any) -> None:
        self.root = root
        self.dot = dot


def _field(scope: _Scope, chain: str) -> Any:
    if chain == "$":
        return scope.root
    if chain == ".":
        return scope.dot
    cur = scope.root if chain.startswith("$") else scope.dot
    for part in chain.lstrip("$").split(".")[1:]:
        if cur is _MISSING or cur is None:
            raise TemplateError(f"nil pointer evaluating {chain} at .{part}")
        if not isinstance(cur, dict):
            raise TemplateError(f"{chain}: .{part} of a {type(cur).__name__}")
        cur = cur.get(part, _MISSING)
    return cur


def _eval_pipeline(scope: _Scope, toks: list[tuple[str, str]]) -> Any:
    commands: list[list[tuple[str, str]]] = [[]]
    depth = 0
    for kind, val in toks:
        if kind == "pipe" and depth == 0:
            commands.append([])
            continue
        depth += kind == "lpar"
        depth -= kind == "rpar"
        commands[-1].append((kind, val))
    piped: Any = _MISSING
    for i, cmd in enumerate(commands):
        if not cmd:
            raise TemplateError("empty command in pipeline")
        args = _eval_args(scope, cmd[1:]) if cmd[0][0] == "ident" else None
        if cmd[0][0] == "ident" and cmd[0][1] in _FUNCS:
            if i > 0:
                args.append(piped)
            piped = _FUNCS[cmd[0][1]](*args)
        elif cmd[0][0] == "ident" and cmd[0][1] in ("true", "false", "nil") and len(cmd) == 1:
            piped = {"true": True, "false": False, "nil": None}[cmd[0][1]]
        elif cmd[0][0] == "ident":
            raise TemplateError(f"function {cmd[0][1]!r} is outside this renderer's subset")
        else:
            if i > 0 or len(cmd) > 1:
                raise TemplateError(f"cannot call {cmd[0][1]!r}: not a function")
            piped = _eval_args(scope, cmd)[0]
    return piped


def _eval_args(scope: _Scope, toks: list[tuple[str, str]]) -> list[Any]:
    out: list[Any] = []
    i = 0
    while i < len(toks):
        kind, val = toks[i]
        if kind == "str":
            out.append(json.loads(val))
        elif kind == "raw":
            out.append(val[1:-1])
        elif kind == "num":
            out.append(int(val))
        elif kind == "field":
            out.append(_field(scope, val))
        elif kind == "ident" and val in ("true", "false", "nil"):
            out.append({"true": True, "false": False, "nil": None}[val])
        elif kind == "lpar":
            depth, j = 1, i + 1
            while j < len(toks) and depth:
                depth += toks[j][0] == "lpar"
                depth -= toks[j][0] == "rpar"
                j += 1
            out.append(_eval_pipeline(scope, toks[i + 1 : j - 1]))
            i = j
            continue
        else:
            raise TemplateError(f"unexpected {val!r} as an argument")
        i += 1
    return out


def _exec(nodes: list[_Node], scope: _Scope, name: str, out: list[str]) -> None:
    for n in nodes:
        try:
            if n.kind == "text":
                out.append(n.value)
            elif n.kind == "out":
                out.append(_go_str(_eval_pipeline(scope, _tokens(n.value))))
            elif n.kind == "if":
                branch = n.body if _truth(_eval_pipeline(scope, _tokens(n.value))) else n.orelse
                _exec(branch, scope, name, out)
            elif n.kind == "with":
                v = _eval_pipeline(scope, _tokens(n.value))
                if _truth(v):
                    _exec(n.body, _Scope(scope.root, v), name, out)
                else:
                    _exec(n.orelse, scope, name, out)
            elif n.kind == "range":
                v = _eval_pipeline(scope, _tokens(n.value))
                items = list(v.values()) if isinstance(v, dict) else v
                if _truth(items):
                    for item in (v[k] for k in sorted(v)) if isinstance(v, dict) else items:
                        _exec(n.body, _Scope(scope.root, item), name, out)
                else:
                    _exec(n.orelse, scope, name, out)
        except TemplateError as e:
            if str(e).startswith(f"{name}:"):
                raise
            raise TemplateError(f"{name}:{n.line}: {{{{ {n.value} }}}}: {e}") from None


def render_template(src: str, context: dict[str, Any], name: str = "template") -> str:
    """Renders one template with `context` as its root (`.` and `$`)."""
    out: list[str] = []
    _exec(_parse(_lex(src), name), _Scope(context, context), name, out)
    return "".join(out)


# --- charts -------------------------------------------------------------------------------


def merge_values(base: Any, override: Any) -> Any:
    """Helm's coalescing: maps merge deeply, anything else replaces, null removes a key."""
    if not isinstance(base, dict) or not isinstance(override, dict):
        return override
    merged = dict(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_values(merged[key], value)
        else:
            merged[key] = value
    return merged


def render_chart(
    chart_dir: Path,
    values_files: list[Path] = (),
    release: str = "leash",
    namespace: str = "leash-system",
) -> dict[str, str]:
    """Renders every template of the chart: {template path: rendered text}."""
    chart = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    values = yaml.safe_load((chart_dir / "values.yaml").read_text()) or {}
    for f in values_files:
        values = merge_values(values, yaml.safe_load(Path(f).read_text()) or {})
    schema_file = chart_dir / "values.schema.json"
    if schema_file.exists():
        jsonschema.validate(values, json.loads(schema_file.read_text()))
    context = {
        "Values": values,
        "Release": {
            "Name": release,
            "Namespace": namespace,
            "Service": "Helm",
            "IsInstall": True,
            "IsUpgrade": False,
            "Revision": 1,
        },
        "Chart": {
            "Name": chart["name"],
            "Version": chart["version"],
            "AppVersion": chart.get("appVersion", ""),
        },
    }
    rendered = {}
    for path in sorted((chart_dir / "templates").rglob("*")):
        rel = path.relative_to(chart_dir).as_posix()
        if path.is_dir() or path.name.startswith("_") or path.name == "NOTES.txt":
            continue
        context["Template"] = {
            "Name": f"{chart['name']}/{rel}",
            "BasePath": f"{chart['name']}/templates",
        }
        rendered[rel] = render_template(path.read_text(), context, rel)
    return rendered


def manifests(rendered: dict[str, str]) -> list[tuple[str, dict]]:
    """The non-empty YAML documents of a rendered chart, with the template of each."""
    docs = []
    for name, text in rendered.items():
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append((name, doc))
    return docs

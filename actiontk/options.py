"""Command-line options generated from the stage config dataclasses: each option is written once, as a field.

A config dataclass documents every field with the string literal that follows it (as litgpt's ``args.py``
does)::

    clip_len: int = 30
    \"\"\"L1: consecutive frames per clip (paper: 30).\"\"\"

A command lists the fields it exposes, and :func:`config_options` turns each into a Typer option: the name
``--clip-len``, the type from the annotation (``bool`` as ``--x/--no-x``, ``list[str]`` repeatable or
comma-separated), the field's docstring as the help text, and the default None ("take the preset's value").
The command receives the options that were given as one ``overrides`` dict, field name -> value.

The docstrings and annotations are read from the class's source with :mod:`ast`, without importing its module:
``actiontk --help`` must not import torch, and the modules of the configs do.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib.util
import inspect
import re
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

_SIMPLE = {"int": int, "float": float, "str": str, "bool": bool}


@dataclasses.dataclass(frozen=True)
class FieldDoc:
    """A config field as its class's source declares it."""

    name: str
    annotation: str  # as written, e.g. "list[str] | None"
    doc: str  # the docstring, whitespace collapsed ("" when the field has none)


@dataclasses.dataclass(frozen=True)
class Expose:
    """One field of a config class that a command offers as an option."""

    config: str | type  # "module:Class" (read without importing it) or the class itself
    field: str
    flag: str | None = None  # the option's spelling when not --field-name, e.g. "--finetune/--cached"


def expose(config: str | type, *fields: str | Expose) -> list[Expose]:
    """The options a command takes from ``config``: field names (or :class:`Expose` for another spelling)."""
    return [f if isinstance(f, Expose) else Expose(config, f) for f in fields]


# -- reading the fields ---------------------------------------------------------------------------------


def _class_source(config: str | type) -> tuple[str, str]:
    """(source text holding the class, class name). A "module:Class" reference is read from the module's file
    next to the actiontk package (or wherever an already imported module lives) without importing it."""
    if isinstance(config, type):
        return textwrap.dedent(inspect.getsource(config)), config.__name__
    module, _, name = config.partition(":")
    if not name:
        raise ValueError(f"config reference {config!r} is not module:Class")
    path = _module_path(module)
    text = _module_text(module)
    # Parse only the class body: the whole of a large module costs tens of milliseconds on every invocation.
    start = re.search(rf"^class {re.escape(name)}\b", text, flags=re.MULTILINE)
    if start is None:
        raise ValueError(f"{config!r}: no class {name} in {path}")
    end = re.compile(r"^(?![\s#)]|$)", flags=re.MULTILINE).search(text, start.end())
    chunk = text[start.start():end.start() if end else len(text)]
    try:
        ast.parse(chunk)
    except SyntaxError:  # the body's end was misjudged (e.g. a column-0 line inside a string): read all of it
        chunk = text
    return chunk, name


def _module_path(module: str) -> Path:
    """The source file of ``module``, found without importing it."""
    loaded = sys.modules.get(module)
    if loaded is not None and getattr(loaded, "__file__", None):
        path = Path(loaded.__file__)
    elif module.split(".")[0] == "actiontk":  # next to this file: importing even a parent package could cost
        path = Path(__file__).resolve().parent.joinpath(*module.split(".")[1:]).with_suffix(".py")
    else:
        spec = importlib.util.find_spec(module)  # imports the parent packages only
        if spec is None or not spec.origin:
            raise ValueError(f"no module {module}")
        path = Path(spec.origin)
    return path


def _module_text(module: str) -> str:
    return _module_path(module).read_text(encoding="utf-8")


@functools.cache
def field_docs(config: str | type) -> dict[str, FieldDoc]:
    """Every annotated field of the class, in order, with the string literal that follows it (litgpt's way).

    Fields inherited from a base class come first, in the base's order (as :func:`dataclasses.fields` lists
    them), with the base's docstrings: a stage config that extends a model config documents only its own fields.
    """
    source, name = _class_source(config)
    cls = next((node for node in ast.walk(ast.parse(source))
                if isinstance(node, ast.ClassDef) and node.name == name), None)
    if cls is None:
        raise ValueError(f"no class {name} in the source of {config!r}")
    out: dict[str, FieldDoc] = {}
    for base in reversed(cls.bases):  # like the MRO of single or simple multiple inheritance: first base wins
        ref = _base_ref(config, base)
        if ref is not None:
            out.update(field_docs(ref))
    body = cls.body
    for i, node in enumerate(body):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        doc = ""
        nxt = body[i + 1] if i + 1 < len(body) else None
        if (isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)):
            doc = " ".join(nxt.value.value.split())
        if node.target.id in out and not doc:  # a re-declared field keeps its place and, if it has none, its doc
            doc = out[node.target.id].doc
        out[node.target.id] = FieldDoc(node.target.id, ast.unparse(node.annotation), doc)
    return out


def _base_ref(config: str | type, base: ast.expr) -> str | type | None:
    """The base class ``base`` (an expression of ``config``'s class statement) as a reference :func:`field_docs`
    reads: the class itself when ``config`` is one, else "module:Class" from the module's top-level imports (or
    the same module). None for ``object`` and for bases that are not plain names (``Generic[T]``)."""
    if not isinstance(base, ast.Name) or base.id == "object":
        return None
    if isinstance(config, type):
        found = next((b for b in config.__bases__ if b.__name__ == base.id), None)
        return found if found is not None and found is not object else None
    module = config.partition(":")[0]
    source = _module_text(module)
    # Top-level "from X import A, B as C" statements (one line or parenthesized over several).
    for match in re.finditer(r"^from[ \t]+\.*[\w.]*[ \t]+import[ \t]+(?:\([^)]*\)|[^\n]*)", source, re.MULTILINE):
        node = ast.parse(match.group(0)).body[0]
        assert isinstance(node, ast.ImportFrom)
        for alias in node.names:
            if (alias.asname or alias.name) == base.id:
                origin = node.module or ""
                if node.level:  # relative to the module's package
                    package = module.split(".")[: len(module.split(".")) - node.level]
                    origin = ".".join([*package, *([node.module] if node.module else [])])
                return f"{origin}:{alias.name}"
    if re.search(rf"^class {re.escape(base.id)}\b", source, flags=re.MULTILINE):
        return f"{module}:{base.id}"
    return None  # a base we cannot read without importing (e.g. a builtin): it adds no documented fields


def _python_type(annotation: str) -> tuple[Any, bool]:
    """(type Typer is given, is a list) for the annotations configs use: int, float, str, bool, list[str],
    each optionally ``| None`` / ``Optional[...]``."""
    text = annotation.replace(" ", "")
    text = re.sub(r"^Optional\[(.*)\]$", r"\1", text)
    parts = [p for p in text.split("|") if p != "None"]
    if len(parts) == 1:
        if parts[0] in _SIMPLE:
            return _SIMPLE[parts[0]], False
        if parts[0] in ("list[str]", "List[str]", "tuple[str,...]"):
            return list[str], True
    raise TypeError(f"no command-line type for the annotation {annotation!r}")


# -- building the options -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Generated:
    """An option made from a field: its Python parameter (the field's name) and its Typer annotation."""

    name: str
    annotation: Any
    is_list: bool


def generate(exposed: Sequence[Expose]) -> list[Generated]:
    """The Typer parameter of every exposed field, in the order given."""
    out: list[Generated] = []
    seen: dict[str, Expose] = {}
    for e in exposed:
        docs = field_docs(e.config)
        if e.field not in docs:
            raise ValueError(f"{e.config!r} has no field {e.field!r} (it has {', '.join(docs)})")
        if e.field in seen:
            raise ValueError(f"field {e.field!r} exposed twice ({seen[e.field].config!r} and {e.config!r})")
        seen[e.field] = e
        fd = docs[e.field]
        if not fd.doc:
            raise ValueError(f"{e.config!r}.{e.field} has no docstring to serve as its help")
        kind, is_list = _python_type(fd.annotation)
        dashed = "--" + e.field.replace("_", "-")
        flag = e.flag or (f"{dashed}/--no-{dashed[2:]}" if kind is bool else dashed)
        option = typer.Option(flag, help=fd.doc)
        out.append(Generated(e.field, Annotated[kind | None, option], is_list))
    return out


def _as_list(value: Any) -> list[str] | None:
    """``--levels a,b``, ``--levels a --levels b`` and a mix of both -> ["a", "b"]; nothing given -> None."""
    if not value:
        return None
    items = [x.strip() for v in ([value] if isinstance(value, str) else value) for x in str(v).split(",")]
    return [x for x in items if x] or None


def config_options(*groups: Sequence[Expose], into: str = "overrides") -> Callable[[Callable], Callable]:
    """Decorator for a Typer command: the fields of ``groups`` become options in place of its ``into``
    parameter, which receives them as one dict (field -> value, None where the option was not given)."""
    exposed = [e for group in groups for e in group]

    def decorate(func: Callable) -> Callable:
        generated = generate(exposed)
        sig = inspect.signature(func, eval_str=True)
        if into not in sig.parameters:
            raise TypeError(f"{func.__name__} has no parameter {into!r} to receive the options")
        own = [p for p in sig.parameters.values() if p.name != into]
        clash = {p.name for p in own} & {g.name for g in generated}
        if clash:
            raise TypeError(f"{func.__name__}: {', '.join(sorted(clash))} is both a parameter and an exposed field")
        at = list(sig.parameters).index(into)
        new = [inspect.Parameter(g.name, inspect.Parameter.KEYWORD_ONLY, annotation=g.annotation, default=None)
               for g in generated]
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
        params[at:at] = new
        lists = {g.name for g in generated if g.is_list}

        def command(**kwargs: Any) -> Any:
            overrides = {g.name: kwargs.pop(g.name) for g in generated}
            for name in lists:
                overrides[name] = _as_list(overrides[name])
            return func(**kwargs, **{into: overrides})

        command.__name__, command.__qualname__ = func.__name__, func.__qualname__
        command.__doc__, command.__module__ = func.__doc__, func.__module__
        command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        command.exposed = exposed  # type: ignore[attr-defined]
        return command

    return decorate

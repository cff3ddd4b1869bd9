"""Keep the documentation honest, without running anything heavy.

- Every ``actiontk COMMAND [SUBCOMMAND] ...`` shown in ``docs/*.md`` or ``README.md`` (in a fenced block or
  in inline code) names a real command, and every ``--option`` it uses exists on that command (checked by
  introspecting the click command that Typer builds from ``actiontk.cli.app``). Placeholder forms such as
  ``--fusion early|late``, ``[--layers L ...]``, ``--resume/--no-resume`` and synopsis lines continued on
  indented lines are understood.
- In a section whose heading names a command (``## `actiontk extract` ``, level 2 or below), a lone option in
  inline code (`` `--grid` ``, `` `--weights PATH` ``) must be an option of that command too.
- Every relative Markdown link points to an existing file, and a ``#fragment`` to an existing heading.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer

from actiontk.cli import app

REPO = Path(__file__).resolve().parents[1]
DOC_FILES = sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]

HELP = {"--help"}
_CLI = typer.main.get_command(app)


# -- the CLI ------------------------------------------------------------------------------------------------


def _options(command) -> set[str]:
    """Every option string a click command accepts (``--pose`` and ``--no-pose``, ``-y`` and ``--yes``)."""
    opts = set(HELP)
    for param in command.params:
        if getattr(param, "param_type_name", "") == "option":
            opts.update(param.opts)
            opts.update(param.secondary_opts)
    return opts


def _subcommands(command) -> dict:
    return dict(getattr(command, "commands", {}) or {})


# -- reading Markdown -----------------------------------------------------------------------------------------


@dataclass
class Snippet:
    text: str
    line: int  # 1-based line of the snippet's start in its file
    fenced: bool


def split_markdown(text: str) -> tuple[list[Snippet], str]:
    """(fenced code blocks, the prose with every fenced line blanked out so line numbers survive)."""
    blocks: list[Snippet] = []
    prose: list[str] = []
    fence: str | None = None
    current: list[str] = []
    start = 0
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.lstrip()
        if fence is None and (stripped.startswith("```") or stripped.startswith("~~~")):
            fence, current, start = stripped[:3], [], number + 1
            prose.append("")
        elif fence is not None and stripped.startswith(fence):
            blocks.append(Snippet("\n".join(current), start, True))
            fence = None
            prose.append("")
        elif fence is not None:
            current.append(line)
            prose.append("")
        else:
            prose.append(line)
    return blocks, "\n".join(prose)


_INLINE = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)


def inline_code(prose: str) -> list[Snippet]:
    """Inline code spans of the prose (they may wrap across lines, not across paragraphs)."""
    out = []
    offset_line = 1
    for paragraph in re.split(r"(\n[ \t]*\n)", prose):
        if paragraph.strip():
            for m in _INLINE.finditer(paragraph):
                out.append(Snippet(m.group(2).strip(), offset_line + paragraph.count("\n", 0, m.start()), False))
        offset_line += paragraph.count("\n")
    return out


def strip_inline_code(prose: str) -> str:
    return _INLINE.sub(lambda m: " " * len(m.group(0)), prose)


# -- finding commands in a snippet ----------------------------------------------------------------------------

_SEPARATORS = re.compile(r"&&|\|\||;|\s\|\s|\$\(|\)\s*$")
_COMMENT = re.compile(r"(^|\s)#.*$")
_EDGE = "[](),.;:`'\"{}<>"


def logical_lines(snippet: Snippet) -> list[tuple[str, int]]:
    """Shell-ish lines of a snippet: comments dropped, ``\\`` continuations and indented ``[--option`` /
    ``--option`` continuation lines (the synopsis style) joined to the line before."""
    if not snippet.fenced:
        return [(" ".join(snippet.text.split()), snippet.line)]
    lines: list[tuple[str, int]] = []
    joining = False
    for i, raw in enumerate(snippet.text.splitlines()):
        line = _COMMENT.sub("", raw).rstrip()
        cont = line.endswith("\\")
        line = line[:-1] if cont else line
        stripped = line.strip()
        indented_option = raw[:1].isspace() and stripped[:1] in ("[", "-")
        if lines and (joining or (indented_option and "actiontk" in lines[-1][0])):
            lines[-1] = (lines[-1][0] + " " + stripped, lines[-1][1])
        elif stripped:
            lines.append((stripped, snippet.line + i))
        joining = cont
    return lines


def _is_actiontk(token: str) -> bool:
    """``actiontk`` or an installed script such as ``.venv/bin/actiontk`` (not ``~/.cache/actiontk``)."""
    return token == "actiontk" or re.fullmatch(r"\S*\bbin/actiontk", token) is not None


def _option_names(token: str) -> list[str]:
    """``[--split`` → ``--split``; ``--opt=value`` → ``--opt``; ``--resume/--no-resume`` → both; else []."""
    token = token.strip(_EDGE)
    if not re.match(r"^--?[A-Za-z]", token):
        return []
    token = token.split("=", 1)[0]
    parts = token.split("/")
    if all(re.match(r"^--?[A-Za-z][A-Za-z0-9-]*$", p) for p in parts):
        return parts
    return [parts[0]]


def check_command_line(line: str) -> list[str]:
    """Problems with the ``actiontk`` commands in one shell line (empty when they match the CLI)."""
    problems = []
    for segment in _SEPARATORS.split(line):
        tokens = segment.split()
        starts = [i for i, t in enumerate(tokens) if _is_actiontk(t)]
        for n, start in enumerate(starts):
            end = starts[n + 1] if n + 1 < len(starts) else len(tokens)
            problems += _check_tokens(tokens[start + 1:end])
    return problems


def _check_tokens(tokens: list[str]) -> list[str]:
    command, path, problems = _CLI, ["actiontk"], []
    i = 0
    # global options and the command (and a group's subcommand) words
    while i < len(tokens):
        tok = tokens[i]
        names = _option_names(tok)
        if names:
            known = _options(command)
            problems += [f"`{' '.join(path)}` has no option {name}" for name in names if name not in known]
            i += 1
            continue
        subs = _subcommands(command)
        if not subs:
            break
        word = tok.strip(_EDGE)
        if word in subs:
            command, path = subs[word], [*path, word]
            i += 1
            continue
        if re.fullmatch(r"[a-z][a-z0-9-]*", word) and tok == word:
            problems.append(f"`{' '.join(path)}` has no command {word!r}")
        return problems  # a placeholder (COMMAND, ...) or a command we cannot follow: nothing more to check
    known = _options(command)
    for tok in tokens[i:]:
        for name in _option_names(tok):
            if name not in known:
                problems.append(f"`{' '.join(path)}` has no option {name}")
    return problems


def _command_of_heading(heading: str):
    """(click command, path) for a heading naming `actiontk CMD [SUB]`, else None."""
    m = re.search(r"`actiontk ([a-z0-9 -]+)`", heading)
    if not m:
        return None
    command, path = _CLI, ["actiontk"]
    for word in m.group(1).split():
        subs = _subcommands(command)
        if word not in subs:
            return None
        command, path = subs[word], [*path, word]
    return command, path


def _all_options(command) -> set[str]:
    """A command's options; for a group, those of all its subcommands."""
    opts = _options(command)
    for sub in _subcommands(command).values():
        opts |= _all_options(sub)
    return opts


def check_doc(text: str) -> list[str]:
    """Every problem with the commands and command-scoped options shown in one Markdown text."""
    blocks, prose = split_markdown(text)
    problems = []
    for snippet in blocks + inline_code(prose):
        for line, number in logical_lines(snippet):
            problems += [f"line {number}: {line!r}: {p}" for p in check_command_line(line)]
    # lone options in inline code, under a heading that names a command
    scope = None
    spans = {s.line: [] for s in inline_code(prose)}
    for s in inline_code(prose):
        spans[s.line].append(s)
    for number, line in enumerate(prose.splitlines(), start=1):
        if re.match(r"^#{1,6}\s", line):
            # a section (## and below) about one command; a page title (#) covers prose about others too
            scope = _command_of_heading(line) if line.startswith("##") else None
        if scope is None:
            continue
        command, path = scope
        known = _all_options(command)
        for s in spans.get(number, []):
            first = s.text.split()[0] if s.text.split() else ""
            if any(_is_actiontk(t) for t in s.text.split()) or not first.startswith("-"):
                continue
            for name in _option_names(first):
                if name not in known:
                    problems.append(f"line {number}: `{s.text}` under `{' '.join(path)}`: no option {name}")
    return problems


# -- links ----------------------------------------------------------------------------------------------------

_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def slugs(text: str) -> set[str]:
    """GitHub's anchors for the headings of a Markdown text."""
    _, prose = split_markdown(text)
    seen: dict[str, int] = {}
    out = set()
    for line in prose.splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def check_links(path: Path, text: str) -> list[str]:
    _, prose = split_markdown(text)
    prose = strip_inline_code(prose)
    problems = []
    for number, line in enumerate(prose.splitlines(), start=1):
        for m in _LINK.finditer(line):
            target = m.group(1)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
                continue
            file_part, _, fragment = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            if not dest.exists():
                problems.append(f"line {number}: link {target!r}: {dest} does not exist")
                continue
            if fragment and dest.suffix == ".md" and fragment not in slugs(dest.read_text(encoding="utf-8")):
                problems.append(f"line {number}: link {target!r}: no heading #{fragment} in {dest.name}")
    return problems


# -- the tests ------------------------------------------------------------------------------------------------


def _name(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_there_are_docs_to_check():
    names = {p.name for p in DOC_FILES}
    assert {"README.md", "quickstart.md", "stages.md", "troubleshooting.md"} <= names


@pytest.mark.parametrize("path", DOC_FILES, ids=_name)
def test_documented_commands_exist_with_their_options(path: Path):
    problems = check_doc(path.read_text(encoding="utf-8"))
    assert not problems, f"{_name(path)}:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", DOC_FILES, ids=_name)
def test_relative_links_resolve(path: Path):
    problems = check_links(path, path.read_text(encoding="utf-8"))
    assert not problems, f"{_name(path)}:\n" + "\n".join(problems)


# The checker itself: it must catch what it is for, and accept the placeholder forms the docs use.


def test_checker_accepts_placeholder_forms():
    doc = """
```
actiontk extract DATASET --root DIR [--split N] [--backbone vgg16|resnet101] [--layers L ...]
                 [--frame-stride S] [--grid G] [--weights imagenet|none|PATH] [--config FILE]
actiontk train-lstm --fusion early|late --resume/--no-resume   # a comment with --not-an-option
torchrun --standalone --nproc_per_node=8 -m actiontk --debug train-3d --num-workers=4 \\
    --attention-from train-lstm/KEY
```
Inline: `actiontk status --gc [-y]`, `actiontk evaluate --report html | jq .summary`, `actiontk datasets check
NAME --root ROOT --decode`, `actiontk train-gap --pose/--no-pose --finetune/--cached`, `actiontk COMMAND`.
"""
    assert check_doc(doc) == []


def test_checker_catches_a_bogus_option():
    for doc in ("`actiontk extract toy --root toy --bogus-option 3`",
                "```\nactiontk train-3d --dataset ucf101\n    [--bogus-option X]\n```",
                "```\ntorchrun --nproc_per_node=2 -m actiontk train-lstm --fusion late \\\n    --bogus-option\n```",
                "`actiontk datasets toy DIR --split 2`",  # an option of another command
                "`actiontk --bogus-option status`"):
        problems = check_doc(doc)
        assert problems and all("no option" in p for p in problems), (doc, problems)


def test_checker_catches_an_unknown_command():
    assert check_doc("`actiontk evalute --report html`")
    assert check_doc("`actiontk datasets chek ucf101 --root R`")


def test_checker_scopes_lone_options_to_the_heading_command():
    good = "## `actiontk status`\n\n`--gc` removes runs; `--yes` skips the question.\n"
    bad = "## `actiontk status`\n\n`--gc` removes runs; `--force` skips the question.\n"
    assert check_doc(good) == []
    assert any("--force" in p for p in check_doc(bad))
    assert check_doc("# `actiontk status`\n\ntrain-3d runs show `--attention-from`.\n") == []  # a page title
    assert check_doc(bad + "\n## Other things\n\n`--force` of some other tool.\n") == check_doc(bad)


def test_link_checker_catches_a_missing_file_and_anchor():
    doc = REPO / "docs" / "quickstart.md"
    assert check_links(doc, "[ok](stages.md) [web](https://example.org/x) [anchor](stages.md#actiontk-extract)") == []
    problems = check_links(doc, "[gone](no-such-page.md) [bad anchor](stages.md#no-such-heading)")
    assert len(problems) == 2

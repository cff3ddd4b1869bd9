"""``index.html`` of a ``predict --overlay`` batch: every input with its prediction and its overlay, in one file.

It follows the evaluation report's conventions (:mod:`actiontk.report`): the page needs no network (style inline,
pictures and videos as ``data:`` URIs, a Content-Security-Policy that allows nothing else and no script at all),
and file and class names — untrusted, they come from the user's disk and the dataset — are escaped by Jinja's
autoescaping environment. An overlay video larger than :data:`EMBED_LIMIT` is linked (by its file name beside the
page) instead of embedded.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

EMBED_LIMIT = 24 << 20  # bytes of an overlay embedded in the page

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; media-src data:; \
style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>actiontk predict: {{ run }}</title>
<style>
  body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2430;
         background: #f6f7f9; }
  header { background: #08306b; color: #fff; padding: 16px 28px; }
  header h1 { margin: 0 0 4px; font-size: 20px; font-weight: 600; }
  main { padding: 8px 28px 40px; max-width: 1400px; }
  section { background: #fff; border: 1px solid #d9dee7; border-radius: 6px; padding: 14px 18px; margin: 14px 0;
            display: flex; gap: 20px; flex-wrap: wrap; }
  h2 { margin: 0 0 8px; font-size: 16px; word-break: break-all; }
  .muted { color: #5b6575; }
  .bad { color: #b42318; }
  table { border-collapse: collapse; }
  td, th { padding: 2px 10px; border-bottom: 1px solid #d9dee7; text-align: left; }
  td.n { text-align: right; font-variant-numeric: tabular-nums; }
  video, img { max-width: 480px; max-height: 360px; background: #000; }
</style>
</head>
<body>
<header><h1>actiontk predict</h1><p>{{ run }} &middot; {{ items|length }} input(s), {{ failed }} failed
{%- if skipped %}, {{ skipped|length }} skipped{% endif %}</p></header>
<main>
{% for it in items %}
<section>
  <div>
    <h2>{{ it.name }}</h2>
    {% if it.error %}
    <p class="bad">failed: {{ it.error }}</p>
    {% else %}
    <p>{{ it.headline }}</p>
    <table><tr><th>class</th><th>probability</th></tr>
    {% for c, p in it.top %}<tr><td>{{ c }}</td><td class="n">{{ "%.1f"|format(100 * p) }}%</td></tr>{% endfor %}
    </table>
    {% if it.detail %}<p class="muted">{{ it.detail }}</p>{% endif %}
    {% endif %}
  </div>
  {% if it.media_src %}
  <div>
    {% if it.video %}<video controls loop muted src="{{ it.media_src }}"></video>
    {% else %}<img alt="attention overlay" src="{{ it.media_src }}">{% endif %}
  </div>
  {% elif it.link %}
  <div><p><a href="{{ it.link }}">{{ it.link_name }}</a>
    <span class="muted">(overlay video, too large to embed)</span></p></div>
  {% endif %}
</section>
{% endfor %}
{% if skipped %}
<section><div><h2>skipped</h2><ul>{% for s in skipped %}<li>{{ s }}</li>{% endfor %}</ul></div></section>
{% endif %}
</main>
</body>
</html>
"""


@dataclass
class Entry:
    """One input of the page."""

    name: str
    headline: str = ""
    top: list[tuple[str, float]] = field(default_factory=list)
    detail: str = ""
    error: str | None = None
    overlay: Path | None = None
    video: bool = False


def _media(entry: Entry) -> dict:
    out = {"media_src": None, "link": None, "link_name": None}
    if entry.overlay is None or not entry.overlay.is_file():
        return out
    size = entry.overlay.stat().st_size
    if size <= EMBED_LIMIT:
        mime = "video/mp4" if entry.video else "image/png"
        out["media_src"] = f"data:{mime};base64," + base64.b64encode(entry.overlay.read_bytes()).decode("ascii")
    else:
        out["link"], out["link_name"] = quote(entry.overlay.name), entry.overlay.name
    return out


def render(run: str, entries: list[Entry], skipped: list[str]) -> str:
    """The page's HTML."""
    from jinja2 import Environment, StrictUndefined

    env = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    items = [{**vars(e), **_media(e)} for e in entries]
    return env.from_string(TEMPLATE).render(run=run, items=items, failed=sum(1 for e in entries if e.error),
                                            skipped=skipped)


def write_index(out_dir: Path, run: str, entries: list[Entry], skipped: list[str]) -> Path:
    """``out_dir/index.html``, written atomically."""
    from actiontk.cache.runs import atomic_write_text

    path = out_dir / "index.html"
    atomic_write_text(path, render(run, entries, skipped))
    return path

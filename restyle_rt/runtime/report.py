"""``restyle-rt invert --report``: one self-contained HTML page per run, ``OUT/report.html``.

For each image inverted by the run: the input, the image after every step (``--save-steps``) or the final inversion,
the steps used, and its share of the loop time. Images are the files the run writes (and the inputs), linked by
relative path, so the page opens from the output folder and moves with it; the style sheet is inline, nothing is
fetched. Every piece of text is escaped. Standard library only.
"""

from __future__ import annotations

import dataclasses
import datetime
import html
import os
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from .. import fsio

REPORT_FILE = "report.html"
# images the browsers this page is for display; another input format (PPM, TIFF) is named instead of shown
_BROWSER_FORMATS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1d1d1f; background: #fafafa; }
h1 { font-size: 20px; margin: 0 0 4px; }
.meta { color: #555; margin: 0 0 16px; }
table.summary td { padding: 1px 12px 1px 0; }
.image { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 10px 12px; margin: 12px 0; }
.image h2 { font-size: 15px; margin: 0 0 6px; word-break: break-all; }
.row { display: flex; flex-wrap: wrap; gap: 8px; align-items: flex-start; }
figure { margin: 0; text-align: center; }
figure img { width: 160px; height: 160px; object-fit: contain; background: #eee; display: block; }
figcaption { font-size: 12px; color: #555; }
.missing { width: 160px; height: 160px; display: flex; align-items: center; justify-content: center;
           background: #eee; color: #888; font-size: 12px; }
.input img { outline: 2px solid #4a7; }
""".strip()


@dataclasses.dataclass
class Entry:
    """One inverted image: its output name, input file, steps used, step images written, share of the loop time."""

    name: str
    input_path: Path
    steps_used: int
    n_steps: int
    seconds: float


class RunReport:
    """Collects what an ``invert`` run did, then writes ``OUT/report.html``.

    Args:
        out: the run's ``--out`` directory.
        settings: run settings shown in the summary (artifacts, iters, early exit, ...).
        save_steps: the run writes ``steps/<t>/NAME.png`` (shown); otherwise only ``NAME.png``.
        strip: the run writes ``strips/NAME.png`` (linked).
    """

    def __init__(self, out: os.PathLike, settings: dict[str, object], save_steps: bool, strip: bool):
        self.out = Path(out)
        self.settings = dict(settings)
        self.save_steps, self.strip = save_steps, strip
        self.entries: list[Entry] = []

    def add_batch(
        self,
        names: Sequence[str],
        paths: Sequence[os.PathLike],
        steps_used: Sequence[int],
        n_steps: int,
        seconds: float,
        failed: Sequence[str] = (),
    ) -> None:
        """Record a batch: its images (those in ``failed`` were not written) and the loop's wall time for it."""
        per_image = seconds / max(len(names), 1)
        for name, path, used in zip(names, paths, steps_used):
            if name not in failed:
                self.entries.append(Entry(name, Path(path), int(used), int(n_steps), per_image))

    def write(self, backend: str, total_seconds: float) -> Path:
        """Write the page (atomically) and return its path."""
        path = self.out / REPORT_FILE
        fsio.write_text(path, render(self, backend, total_seconds))
        return path


def _href(target: Path, base: Path) -> str:
    """A relative URL from ``base`` to ``target`` (percent-encoded; '/' separators)."""
    rel = os.path.relpath(os.path.abspath(target), os.path.abspath(base))
    return quote(rel.replace(os.sep, "/"))


def _figure(target: Path, base: Path, caption: str, cls: str = "") -> str:
    cap = html.escape(caption)
    klass = f' class="{cls}"' if cls else ""
    if target.suffix.lower() not in _BROWSER_FORMATS:
        return (
            f'<figure{klass}><div class="missing">{html.escape(target.suffix or "file")} not shown</div>'
            f"<figcaption>{cap}</figcaption></figure>"
        )
    return (
        f'<figure{klass}><img src="{html.escape(_href(target, base))}" alt="{cap}" loading="lazy">'
        f"<figcaption>{cap}</figcaption></figure>"
    )


def render(report: RunReport, backend: str, total_seconds: float, now: datetime.datetime | None = None) -> str:
    """The HTML page of a run (pure: no files touched)."""
    out = report.out
    now = now or datetime.datetime.now().astimezone()
    n = len(report.entries)
    rows = [
        ("backend", backend),
        ("images", str(n)),
        ("total", f"{total_seconds:.2f} s"),
        ("throughput", f"{n / max(total_seconds, 1e-9):.2f} images/s"),
    ]
    rows += [(k, "-" if v is None else str(v)) for k, v in report.settings.items()]
    summary = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in rows)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>restyle-rt invert: {html.escape(str(out.name or out))}</title>",
        f"<style>{_CSS}</style>",
        "</head><body>",
        "<h1>restyle-rt invert</h1>",
        f'<p class="meta">{html.escape(str(out))} &middot; {html.escape(now.strftime("%Y-%m-%d %H:%M:%S %Z"))}</p>',
        f'<table class="summary">{summary}</table>',
    ]
    for e in report.entries:
        figs = [_figure(e.input_path, out, f"input {e.input_path.name}", "input")]
        if report.save_steps:
            figs += [
                _figure(out / "steps" / str(t) / f"{e.name}.png", out, f"step {t}") for t in range(1, e.n_steps + 1)
            ]
        else:
            figs.append(_figure(out / f"{e.name}.png", out, f"inversion ({e.n_steps} steps)"))
        links = (
            f' &middot; <a href="{html.escape(_href(out / "strips" / f"{e.name}.png", out))}">strip</a>'
            if report.strip
            else ""
        )
        parts.append(
            f'<section class="image"><h2>{html.escape(e.name)}</h2>'
            f'<p class="meta">steps used {e.steps_used} of {e.n_steps} &middot; {e.seconds:.3f} s '
            f"(its share of its batch's loop time){links}</p>"
            f'<div class="row">{"".join(figs)}</div></section>'
        )
    if not report.entries:
        parts.append("<p>No image was inverted by this run.</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"

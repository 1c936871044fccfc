"""``restyle-rt invert --report``: the page links every image it shows, escapes every name, and renders."""

from __future__ import annotations

import datetime
import html.parser
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

from restyle_rt.cli import main
from restyle_rt.runtime import report as rpt

pytestmark = pytest.mark.unit
ODD = "a b#1&<i>\"q'%20"  # a file name that must be escaped in HTML and percent-encoded in a URL


class _Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.links, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a["src"])
        elif tag == "a":
            self.links.append(a["href"])
        elif tag in ("script", "link", "iframe"):
            raise AssertionError(f"the page must be self-contained: <{tag}>")

    def handle_data(self, data):
        self.text.append(data)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text())
    return page


def _inputs(rgb_images, tmp_path):
    paths = rgb_images(2, size=(40, 56))
    odd = tmp_path / "imgs" / f"{ODD}.png"
    shutil.copy(paths[1], odd)
    return [paths[0], odd]


def test_report_with_steps(toy, rgb_images, tmp_path):
    paths = _inputs(rgb_images, tmp_path)
    out = tmp_path / "out"
    rc = main(
        [
            "invert",
            str(toy[0]),
            *map(str, paths),
            "--out",
            str(out),
            "--iters",
            "3",
            "--save-steps",
            "--strip",
            "--report",
            "--backend",
            "ort",
        ]
    )
    assert rc == 0
    page_file = out / "report.html"
    page = _parse(page_file)
    files = [(out / unquote(src)).resolve() for src in page.imgs]
    assert all(f.is_file() for f in files), [f for f in files if not f.is_file()]  # every image shown exists
    want = {p.resolve() for p in paths}
    want |= {(out / "steps" / str(t) / f"{p.stem}.png").resolve() for p in paths for t in (1, 2, 3)}
    assert set(files) == want  # inputs and every step of every image, nothing else
    assert {(out / unquote(h)).resolve() for h in page.links} == {
        (out / "strips" / f"{p.stem}.png").resolve() for p in paths
    }
    raw = page_file.read_text()
    assert ODD not in raw and "<i>" not in raw  # escaped, never markup
    text = "".join(page.text)
    assert ODD in text and "steps used 3 of 3" in text and "ort" in text


def test_report_without_steps_shows_the_final_images(toy, rgb_images, tmp_path):
    paths = rgb_images(2)
    out = tmp_path / "out"
    assert (
        main(
            ["invert", str(toy[0]), *map(str, paths), "--out", str(out), "--iters", "2", "--report", "--backend", "ort"]
        )
        == 0
    )
    files = {(out / unquote(s)).resolve() for s in _parse(out / "report.html").imgs}
    assert files == {p.resolve() for p in paths} | {(out / f"{p.stem}.png").resolve() for p in paths}


def test_no_report_unless_asked(toy, rgb_images, tmp_path):
    out = tmp_path / "out"
    assert (
        main(["invert", str(toy[0]), str(rgb_images(1)[0]), "--out", str(out), "--iters", "1", "--backend", "ort"]) == 0
    )
    assert not (out / "report.html").exists()


def test_render_escapes_settings_and_names(tmp_path):
    r = rpt.RunReport(tmp_path / "o", {"artifacts": "<script>alert(1)</script>", "early_exit": None}, False, False)
    r.add_batch(["x<y>", "bad"], [tmp_path / "in.tiff", tmp_path / "b.png"], [2, 2], 2, 1.0, failed={"bad"})
    page = rpt.render(r, "ort & co", 1.0, now=datetime.datetime(2026, 1, 1))
    assert "<script>" not in page and "&lt;script&gt;" in page and "ort &amp; co" in page
    assert "x&lt;y&gt;" in page and ".tiff not shown" in page  # a format browsers do not show is named instead
    assert "bad" not in page  # not written (non-finite): not shown
    assert "0.500 s" in page  # its share of the batch's loop time


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.skipif(_chromium() is None, reason="no chromium installed (apt-get install chromium)")
def test_report_renders_in_a_browser(toy, rgb_images, tmp_path):
    """Headless Chromium loads the page and its images: the screenshot is not blank and shows the images."""
    paths = _inputs(rgb_images, tmp_path)
    out = tmp_path / "out"
    assert (
        main(
            [
                "invert",
                str(toy[0]),
                *map(str, paths),
                "--out",
                str(out),
                "--iters",
                "3",
                "--save-steps",
                "--report",
                "--backend",
                "ort",
            ]
        )
        == 0
    )
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--screenshot={shot}",
            "--window-size=1200,900",
            (out / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.is_file(), proc.stderr[-2000:]
    a = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    background = np.array([0xFA, 0xFA, 0xFA])
    assert (np.abs(a - background).sum(axis=2) > 30).mean() > 0.05  # not blank: text, cards and pictures
    # the noise inputs and the toy's inversions are many-coloured; placeholders and broken-image icons are not
    assert len(np.unique(a.reshape(-1, 3), axis=0)) > 2000

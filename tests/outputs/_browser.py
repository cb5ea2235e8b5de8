"""Headless Chromium for the HTML tests: the DOM after the page's scripts ran (--dump-dom),
screenshots, and the console lines the page logged.  A small DOM of the dump to assert on."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--enable-logging=stderr", "--v=0"]
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def exe() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "headless Chromium is required (Debian package `chromium`, see .ci/apt-packages.txt)"
    return found


def dump_dom(url: str, profile: Path) -> tuple["Node", str]:
    """(the DOM after load and scripts, Chromium's stderr)."""
    proc = subprocess.run([exe(), *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return parse(proc.stdout), proc.stderr


def screenshot(url: str, shot: Path, profile: Path, size: str = "1280,1600") -> str:
    proc = subprocess.run([exe(), *FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}",
                           f"--window-size={size}", url], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return proc.stderr


def console_lines(stderr: str) -> list[str]:
    """What the page logged (console.*, and CSP refusals of scripts)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Content Security Policy" in line]


class Node:
    def __init__(self, tag: str, attrs: dict, parent: "Node | None"):
        self.tag, self.attrs, self.parent, self.children = tag, attrs, parent, []

    @property
    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text for c in self.children)

    def iter(self, tag: str | None = None, **attrs):
        for c in self.children:
            if isinstance(c, Node):
                if (tag is None or c.tag == tag) and all(
                        (c.attrs.get(k.rstrip("_").replace("_", "-")) == v if v is not True
                         else k.rstrip("_").replace("_", "-") in c.attrs) for k, v in attrs.items()):
                    yield c
                yield from c.iter(tag, **attrs)

    def find(self, tag: str | None = None, **attrs) -> "Node | None":
        return next(self.iter(tag, **attrs), None)

    def by_id(self, ident: str) -> "Node | None":
        return self.find(None, id=ident)

    @property
    def hidden(self) -> bool:
        n = self
        while n is not None:
            if "hidden" in n.attrs:
                return True
            n = n.parent
        return False


class _Parser(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {}, None)
        self.cur = self.root

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: (v if v is not None else "") for k, v in attrs}, self.cur)
        self.cur.children.append(node)
        if tag not in VOID:
            self.cur = node

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Node(tag, {k: (v if v is not None else "") for k, v in attrs}, self.cur))

    def handle_endtag(self, tag):
        n = self.cur
        while n is not None and n.tag != tag:
            n = n.parent
        if n is not None and n.parent is not None:
            self.cur = n.parent

    def handle_data(self, data):
        self.cur.children.append(data)


def parse(text: str) -> Node:
    p = _Parser()
    p.feed(text)
    return p.root

"""What the HTML reports' tests share: a well-formedness checker, and a headless browser run that returns the
rendered DOM and the console messages (Chromium from the Debian packages in CI; tests skip only without one)."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path


class Checker(HTMLParser):
    """Well-formedness: every opened element is closed in order (void elements excepted)."""

    VOID = {"meta", "br", "input", "img", "hr", "link", "rect", "path"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.tags = [], [], set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.add(tag)

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()


def browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def render(page: Path, profile: Path, script: str | None = None) -> tuple[str, list[str]]:
    """(the DOM after scripts ran, console and uncaught-error lines) of ``page`` in a headless browser.

    ``script`` runs after the page's own (it is added at the end of a copy of the page): it can use the page's
    controls and write what it saw into the DOM, which comes back with the rest."""
    if script is not None:
        text = page.read_text(encoding="utf-8")
        end = text.rindex("</body>")
        page = page.with_name(page.stem + "-scripted.html")
        page.write_text(f"{text[:end]}<script>{script}</script>{text[end:]}", encoding="utf-8")
    # no network here: the background services' connections would only be refused (and slow the start)
    quiet = ["--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-quic", f"--user-data-dir={profile}"]
    result = subprocess.run([browser(), "--headless=new", "--disable-gpu", "--no-sandbox", "--enable-logging=stderr",
                             "--v=0", *quiet, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout, [line for line in result.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]

"""A screenshot of a study report's first screen in headless Chromium, to check that the page
opens on the verdict table and reads at the given width. Chromium is not a dependency of
veriscale (on Debian: `apt-get install -y chromium`); this is a check script, not a test.

    python benchmarks/report_screenshot.py runs/didactic-quick/report.html --out runs/didactic-quick/first_screen.png
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def screenshot(page: Path, out: Path, width: int, height: int) -> Path:
    """Render `page` at width x height CSS pixels into the PNG `out`."""
    browser = next((b for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        sys.exit(f"no headless browser found ({', '.join(BROWSERS)}); on Debian: apt-get install -y chromium")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", f"--window-size={width},{height}", "--hide-scrollbars",
                        f"--screenshot={out.resolve()}", page.resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path, help="a study's report.html")
    ap.add_argument("--out", type=Path, default=None, help="PNG path [first_screen.png beside the report]")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=1000)
    a = ap.parse_args()
    out = screenshot(a.report, a.out or a.report.with_name("first_screen.png"), a.width, a.height)
    print(f"wrote {out} ({a.width} x {a.height})")


if __name__ == "__main__":
    main()

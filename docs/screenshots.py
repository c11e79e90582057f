"""The README's pictures, taken from a real run: the web chat talking with a pack's character, and its profile chart.

    .venv/bin/python docs/screenshots.py                       # packs/maggie (make demo builds it) → docs/img/
    .venv/bin/python docs/screenshots.py --pack packs/house --message "Is it lupus?"

Serves the pack with ``rolecast serve`` (the real model, its LoRA when it has one) on a free loopback
port, opens the web chat in Debian's Chromium (playwright drives it: no browser download), sends the
messages, waits for each streamed reply, and saves the page. The replies are sampled, so each run
differs; re-take the pictures when the page changes.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
MESSAGES = ["Rough night?", "Do you ever sleep?"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, server: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"rolecast serve exited with {server.returncode}")
        try:
            with urllib.request.urlopen(url + "healthz", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    sys.exit(f"rolecast serve did not answer on {url} in {seconds:.0f} s")


def settled(locator, quiet_ms: int = 2000, seconds: float = 120) -> None:
    """Wait until the streamed text has not changed for ``quiet_ms`` (the reply is complete)."""
    deadline, text, since = time.monotonic() + seconds, None, time.monotonic()
    while time.monotonic() < deadline:
        now = locator.inner_text()
        if now != text:
            text, since = now, time.monotonic()
        elif now.strip() and time.monotonic() - since > quiet_ms / 1000:
            return
        time.sleep(0.2)
    sys.exit("the reply did not settle")


def chat(url: str, messages: list[str], out: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1100, "height": 760})
        page.set_default_timeout(120_000)
        page.goto(url)
        bots = page.locator("#chat [data-testid=bot]")
        expect(bots.first).not_to_be_empty()  # the character's greeting
        for i, message in enumerate(messages):
            page.fill("#message textarea", message)
            page.click("#send")
            expect(bots).to_have_count(i + 2)
            settled(bots.last)
        page.screenshot(path=str(out))
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pack", default=str(ROOT / "packs" / "maggie"))
    parser.add_argument("--message", action="append", help="what to send (repeatable; default: two questions)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "img"))
    args = parser.parse_args()
    pack, out = Path(args.pack), Path(args.out)
    if not (pack / "pack.json").exists():
        sys.exit(f"{pack} is not a pack: build it first (make demo builds packs/maggie)")
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen([sys.executable, "-m", "rolecast.cli", "-q", "serve", str(pack), "--port", str(port),
                                   "--db", str(Path(tmp) / "chat.db")])
        try:
            url = f"http://127.0.0.1:{port}/"
            wait_until_up(url, server)
            chat(url, args.message or MESSAGES, out / "webchat.png")
        finally:
            server.terminate()
            server.wait(30)
    shutil.copyfile(pack / "profile.png", out / "profile.png")
    print(f"wrote {out / 'webchat.png'} and {out / 'profile.png'}")


if __name__ == "__main__":
    main()

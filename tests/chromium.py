"""Drive real headless Chromium over the Chrome DevTools protocol, with no
dependency beyond the standard library: `--remote-debugging-pipe` makes Chromium
read NUL-terminated JSON commands on file descriptor 3 and write replies and
events on descriptor 4 (no network port, no websocket client).

    with Browser() as b:
        page = b.open("file:///tmp/report/index.html")
        images = page.evaluate("Array.from(document.images).map(i => i.naturalWidth)")
        page.screenshot_full_page("/tmp/report.png")
        page.errors          # console errors, uncaught exceptions, failed loads

Used by tests/test_report_browser.py; `ensure_chromium()` installs the Debian
package when /usr/bin/chromium is missing (a fresh CI machine, run as root).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio", "--no-default-browser-check"]


def ensure_chromium(timeout: int = 900) -> Path:
    """Install Debian's `chromium` (apt-get update once, then install without
    recommends) unless /usr/bin/chromium exists. Raises RuntimeError with apt's
    output when that fails (not root, no network, no apt)."""
    if CHROMIUM.exists():
        return CHROMIUM
    apt = shutil.which("apt-get")
    if apt is None:
        raise RuntimeError("/usr/bin/chromium is missing and apt-get is not available to install it")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in ([apt, "update"], [apt, "install", "-y", "--no-install-recommends", "chromium"]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n"
                               f"{proc.stderr[-2000:]}")
    if not CHROMIUM.exists():
        raise RuntimeError("apt-get installed chromium but /usr/bin/chromium is still missing")
    return CHROMIUM


class CDPError(RuntimeError):
    pass


class Browser:
    """One headless Chromium with a fresh profile directory, closed on exit."""

    def __init__(self, binary: str | os.PathLike = CHROMIUM, *, width: int = 1200, height: int = 900,
                 timeout: float = 60.0):
        self.timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="chromium-profile-")
        self._log = tempfile.TemporaryFile()  # Chromium's stderr (a pipe could fill up and block it)
        to_chrome_r, to_chrome_w = os.pipe()
        from_chrome_r, from_chrome_w = os.pipe()
        # Child ends moved above 10 so that 3<& / 4>& cannot clobber them (bash, not dash:
        # dash only knows single-digit descriptors).
        child_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
        child_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        args = [str(binary), *FLAGS, f"--user-data-dir={self._profile}", f"--window-size={width},{height}",
                "--remote-debugging-pipe", "about:blank"]
        self.proc = subprocess.Popen(
            ["/bin/bash", "-c", f'exec "$@" 3<&{child_r} 4>&{child_w} {child_r}<&- {child_w}>&-', "bash", *args],
            pass_fds=(child_r, child_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=self._log, start_new_session=True)
        os.close(child_r)
        os.close(child_w)
        self._out = to_chrome_w
        self._in = from_chrome_r
        os.set_blocking(self._in, False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._in, selectors.EVENT_READ)
        self._buf = b""
        self._next_id = 0
        self.events: list[dict] = []

    # ------------------------------------------------------------------ protocol

    def _read_messages(self, deadline: float) -> list[dict]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no message from Chromium within the timeout")
            if not self._sel.select(min(left, 0.5)):
                if self.proc.poll() is not None:
                    raise CDPError(f"Chromium exited with {self.proc.returncode}: {self._stderr_tail()}")
                continue
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise CDPError(f"Chromium closed the debugging pipe: {self._stderr_tail()}")
            self._buf += chunk
        *messages, self._buf = self._buf.split(b"\0")
        return [json.loads(m) for m in messages if m]

    def _stderr_tail(self) -> str:
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")[-2000:]

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float | None = None) -> dict:
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        data = json.dumps(msg).encode("utf-8") + b"\0"
        while data:
            data = data[os.write(self._out, data):]
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            for m in self._read_messages(deadline):
                if m.get("id") == self._next_id:
                    if "error" in m:
                        raise CDPError(f"{method}: {m['error']}")
                    return m.get("result", {})
                self.events.append(m)

    def wait_event(self, method: str, session: str | None = None, timeout: float | None = None) -> dict:
        deadline = time.monotonic() + (timeout or self.timeout)
        seen = 0
        while True:
            for m in self.events[seen:]:
                if m.get("method") == method and (session is None or m.get("sessionId") == session):
                    return m
            seen = len(self.events)
            self.events.extend(self._read_messages(deadline))

    # ------------------------------------------------------------------ pages

    def open(self, url: str) -> "Page":
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=session)
        self.send("Page.navigate", {"url": url}, session=session)
        self.wait_event("Page.loadEventFired", session=session)
        return page

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                try:
                    self.send("Browser.close", timeout=10)
                except (CDPError, TimeoutError, OSError):
                    pass
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    # Chromium was started in a session of its own: end its renderers with it.
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(timeout=10)
        finally:
            for fd in (self._out, self._in):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._sel.close()
            self._log.close()
            shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Page:
    def __init__(self, browser: Browser, session: str):
        self.browser = browser
        self.session = session

    def send(self, method: str, params: dict | None = None) -> dict:
        return self.browser.send(method, params, session=self.session)

    def evaluate(self, expression: str):
        """Value of a JavaScript expression in the page (returned by value)."""
        r = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            raise CDPError(f"evaluate {expression!r}: {r['exceptionDetails']}")
        return r["result"].get("value")

    @property
    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and browser log errors (e.g. a
        resource that failed to load, a blocked request) seen so far."""
        out = []
        for m in self.browser.events:
            if m.get("sessionId") != self.session:
                continue
            p = m.get("params", {})
            if m.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console." + p["type"] + ": " + " ".join(str(a.get("value", a.get("description", "")))
                                                                    for a in p.get("args", [])))
            elif m.get("method") == "Runtime.exceptionThrown":
                out.append("exception: " + json.dumps(p.get("exceptionDetails", {}))[:500])
            elif m.get("method") == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                e = p["entry"]
                out.append(f"log ({e.get('source')}): {e.get('text')} {e.get('url', '')}".strip())
        return out

    def screenshot_full_page(self, path: str | os.PathLike, width: int = 1200) -> tuple[int, int]:
        """PNG of the whole document (not just the viewport); returns (width, height) in CSS px."""
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        w, h = max(width, int(size["width"])), int(size["height"]) + 1
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": w, "height": h, "deviceScaleFactor": 1, "mobile": False})
        shot = self.send("Page.captureScreenshot",
                         {"format": "png", "captureBeyondViewport": True,
                          "clip": {"x": 0, "y": 0, "width": w, "height": h, "scale": 1}})
        Path(path).write_bytes(base64.b64decode(shot["data"]))
        return w, h

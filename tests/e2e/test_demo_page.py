"""The demo of `wsig serve` (no --route, --auto-upgrade or --static; SPEC.md section 3): route /msg -> Name
Msg, a built-in handler that answers `[date]` with the current date to every Msg client and routes
anything else as Pode's default routing does, and at `/` a self-contained page where every open tab
sees what any tab sends. The page is driven in headless Chromium (Debian's /usr/bin/chromium) over
its DevTools protocol, spoken with python3-websockets."""
import asyncio
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest
import websockets

from helpers_serve import DEADLINE, Peer, RawWS, connections, http, run_async, wait_connections, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--remote-debugging-port=0"]


def this_year():
    return str(datetime.datetime.now(datetime.timezone.utc).year)


# --- without a browser -------------------------------------------------------------------------

def test_demo_page_is_self_contained(serve):
    s = serve()
    r = http(s.port, "GET", "/")
    assert r.status == 200
    assert r.headers.get("content-type", "").startswith("text/html"), r.headers
    page = r.text
    for element in ('id="message"', 'id="send"', 'id="messages"'):
        assert re.search(element.replace('"', "[\"']"), page), element
    # nothing fetched from elsewhere: no CDN, no jQuery download
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page, re.I), "the page loads a remote resource"


def test_demo_route_is_msg(serve):
    s = serve()
    ws = RawWS.open(s.port, "/msg")
    assert ws.name == "Msg"
    ws.close()


def test_demo_broadcasts_the_date_to_every_msg_client(serve):
    s = serve()
    a, b = Peer(f"{s.ws_url}/msg"), Peer(f"{s.ws_url}/msg")
    a.send_env("[date]")
    for p in (a, b):
        text = p.recv()
        assert text != "[date]"
        assert this_year() in text, text
    a.close()
    b.close()


def test_demo_routes_anything_else_like_pode(serve):
    s = serve()
    a, b = Peer(f"{s.ws_url}/msg"), Peer(f"{s.ws_url}/msg")
    a.send_env("hello tabs")
    assert a.recv() == "hello tabs"
    assert b.recv() == "hello tabs"
    a.send_env("only me", direct=True)
    assert a.recv() == "only me"
    a.close()
    b.close()


# --- in Chromium --------------------------------------------------------------------------

class CDP:
    """A minimal Chrome DevTools Protocol client (browser endpoint, flattened page sessions)."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0
        self.pending = {}
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self):
        async for raw in self.ws:
            msg = json.loads(raw)
            fut = self.pending.pop(msg.get("id"), None)
            if fut and not fut.done():
                fut.set_result(msg)

    async def call(self, method, params=None, session=None, timeout=DEADLINE):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        fut = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = fut
        await self.ws.send(json.dumps(msg))
        reply = await asyncio.wait_for(fut, timeout)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    async def evaluate(self, session, expression):
        r = await self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    async def wait_eval(self, session, expression, what, timeout=DEADLINE):
        end = time.monotonic() + timeout
        last = None
        while time.monotonic() < end:
            try:
                last = await self.evaluate(session, expression)
            except RuntimeError as e:  # e.g. the page is still loading
                last = str(e)
            else:
                if last:
                    return last
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what} (last: {last!r})")

    async def open_page(self, url):
        target = (await self.call("Target.createTarget", {"url": url}))["targetId"]
        session = (await self.call("Target.attachToTarget", {"targetId": target, "flatten": True}))["sessionId"]
        await self.call("Runtime.enable", session=session)
        return session

    async def type_and_send(self, session, text):
        await self.evaluate(session, "document.querySelector('#message').focus(); "
                                     "document.querySelector('#message').value = ''")
        await self.call("Input.insertText", {"text": text}, session)
        box = await self.evaluate(session, "(() => { const r = document.querySelector('#send')"
                                           ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2] })()")
        for kind in ("mousePressed", "mouseReleased"):
            await self.call("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1], "button": "left",
                                                         "clickCount": 1}, session)


ITEMS = "Array.from(document.querySelectorAll('#messages li')).map(li => li.textContent.trim())"


@pytest.fixture
def chromium(tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing (Debian package chromium; `scripts/deps --test` installs it)")
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    log = open(tmp_path / "chromium.log", "wb")
    proc = subprocess.Popen([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    active = profile / "DevToolsActivePort"
    try:
        lines = wait_for(lambda: active.exists() and len(active.read_text().split()) >= 2 and
                         active.read_text().split(), "Chromium's DevToolsActivePort", timeout=30)
        port, path = lines[0], lines[1]

        async def connect():
            ws = await websockets.connect(f"ws://127.0.0.1:{port}{path}", max_size=None, ping_interval=None,
                                          compression=None)
            return CDP(ws)

        cdp = run_async(connect(), 20)
        yield cdp
        run_async(cdp.ws.close(), 10)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the browser and its helpers: the session started above
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass
        log.close()
        shutil.rmtree(profile, ignore_errors=True)


def test_two_tabs_see_each_others_messages_and_the_date(serve, chromium):
    s = serve()
    page_url = f"http://127.0.0.1:{s.port}/"

    async def scenario():
        one = await chromium.open_page(page_url)
        two = await chromium.open_page(page_url)
        for session in (one, two):
            await chromium.wait_eval(session, "document.readyState === 'complete' && "
                                              "!!document.querySelector('#message') && "
                                              "!!document.querySelector('#send') && "
                                              "!!document.querySelector('#messages')", "the demo page")
        return one, two

    one, two = run_async(scenario(), 40)
    wait_connections(s.port, 2, name="Msg", timeout=15)  # both tabs hold a socket on /msg

    async def send_and_check():
        await chromium.type_and_send(one, "hello from tab one")
        for session in (one, two):
            await chromium.wait_eval(session, f"{ITEMS}.includes('hello from tab one')",
                                     "the message as an li in #messages of both tabs")
        before = {session: len(await chromium.evaluate(session, ITEMS)) for session in (one, two)}
        await chromium.type_and_send(two, "[date]")
        dates = []
        for session in (one, two):
            items = await chromium.wait_eval(session, f"(() => {{ const i = {ITEMS}; "
                                                      f"return i.length > {before[session]} ? i : null }})()",
                                             "the [date] answer in both tabs")
            dates.append(items[-1])
        return dates

    dates = run_async(send_and_check(), 40)
    for text in dates:
        assert text != "[date]"
        assert this_year() in text, text
    for text in dates:
        parsed = run_async(chromium.evaluate(one, f"!isNaN(Date.parse({json.dumps(text)}))"))
        assert parsed, f"not a date: {text!r}"
    assert len(connections(s.port, name="Msg")) == 2

"""Baton's streams read by real third-party clients (infra/streams-flow.sh).

Against a running local stack:
1. httpx + httpx-sse: a workflow task's stream and a conversation turn's stream (the workflow's
   milestones and the answering task's text, ids `w.t`) are each read in two connections: the
   client reads a few chunks, drops the connection mid-stream, and reconnects with
   `Last-Event-ID` set to the last id it got, reading on to the end. Every event must arrive
   exactly once and in order (each stream's numbers consecutive from 1, ids strictly
   increasing), the chunks must add up to the output the API recorded, and a reconnect after
   the end must answer 204. The CORS answers a page gets are checked too.
2. Headless Chromium (Debian's /usr/bin/chromium, driven by Playwright): infra/streams_page.html,
   served from its own origin, opens a turn's stream with EventSource and renders it; the
   rendered page must hold the turn's final response. Its screenshot is saved.

The streaming agents are `openai` agents on the stack's OpenAI stand-in (which streams a word
every 20 ms), registered here with the stand-in's URL and key reference read from the example
agent `openai-keywords`. Usage: streams_flow.py API_URL SCREENSHOT.png
"""

import functools
import http.server
import json
import os
import sys
import tempfile
import threading
import time
import urllib.parse

import httpx
from httpx_sse import connect_sse

TENANT = "default"
PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "streams_page.html")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The stand-in's brief model answers with the message's first sentence, a word every 20 ms:
# "word 1, word 2, …" up to WORDS is about two seconds of streaming, in some twenty chunks
# (batched every 100 ms), so a client that drops after three is mid-stream.
WORDS = 50
ORIGIN = "http://localhost:9"  # any page's origin: the local stack answers every one
TIMEOUT_S = 90


def fail(message):
    raise SystemExit(f"streams-flow: {message}")


def check(condition, message):
    if not condition:
        fail(message)


def sentence(opening):
    words = ", ".join(f"word {n}" for n in range(1, WORDS + 1))
    return f"{opening}: {words}. Nothing after the first sentence is answered."


class Api:
    def __init__(self, base):
        self.http = httpx.Client(base_url=base, headers={"X-Tenant-Id": TENANT}, timeout=30)

    def call(self, method, path, status, body=None):
        response = self.http.request(method, path, json=body)
        if response.status_code not in ((status,) if isinstance(status, int) else status):
            fail(f"{method} {path}: expected {status}, got {response.status_code}: {response.text[:500]}")
        return response.json()

    def link(self, path):
        """A stream link from POST /v1/stream-tokens."""
        minted = self.call("POST", "/v1/stream-tokens", 201, {"path": path})
        check({"token", "url", "expires_at"} <= minted.keys(), f"stream-tokens answered {minted}")
        check(minted["token"] in minted["url"], f"the link carries its token: {minted}")
        return minted["url"]

    def until(self, what, read, done):
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            value = read()
            if done(value):
                return value
            time.sleep(0.2)
        fail(f"{what} did not finish within {TIMEOUT_S} s: {json.dumps(value)[:800]}")


def register_streamers(api):
    """Two openai agents on the stand-in: a workflow writer and a conversation's core agent."""
    example = api.call("GET", "/v1/agents/openai-keywords", 200)
    base = {
        "kind": "openai",
        "base_url": example["base_url"],
        "api_key": example["api_key"],
        "model": "baton-brief",
        "timeout_ms": 30000,
    }
    api.call("POST", "/v1/agents", 201, {**base, "name": "streams-writer", "capabilities": ["streams.write"]})
    api.call(
        "POST",
        "/v1/agents",
        201,
        {**base, "name": "streams-talker", "capabilities": ["streams.talk"], "conversation": {"role": "core"}},
    )


def parse_id(text, streams):
    parts = text.split(".")
    check(len(parts) == streams and all(p.isdigit() for p in parts), f"event id `{text}` is not {streams} number(s)")
    return tuple(int(p) for p in parts)


def read(url, streams, last_id=None, stop_after_chunks=None):
    """One connection's events as (id, type, data); with stop_after_chunks, the client drops
    the connection right after that many chunks. Also the `retry` the stream asked for."""
    headers = {"Origin": ORIGIN}
    if last_id is not None:
        headers["Last-Event-ID"] = last_id
    events, retry, chunks = [], None, 0
    with (
        httpx.Client(timeout=httpx.Timeout(30, read=30)) as client,
        connect_sse(client, "GET", url, headers=headers) as source,
    ):
        response = source.response
        check(response.status_code == 200, f"the stream answered {response.status_code}: {response.read()[:300]!r}")
        check(
            response.headers.get("content-type", "").startswith("text/event-stream"),
            f"the stream's content type is {response.headers.get('content-type')}",
        )
        check(
            response.headers.get("access-control-allow-origin") == ORIGIN,
            f"the stream does not let a page of {ORIGIN} read it: {dict(response.headers)}",
        )
        for sse in source.iter_sse():
            if sse.retry is not None:
                retry = sse.retry
            if not sse.id and not sse.data:
                continue  # the `retry:` line alone is not an event
            check(sse.id, f"an event without an id: {sse}")
            parse_id(sse.id, streams)
            data = json.loads(sse.data)
            check(data.get("type") == sse.event, f"event `{sse.event}` carries type {data.get('type')}")
            events.append((sse.id, sse.event, data))
            if sse.event == "chunk":
                chunks += 1
                if stop_after_chunks is not None and chunks >= stop_after_chunks:
                    break  # leaving the block closes the connection mid-stream
    return events, retry


def check_order(events, streams):
    """Each event once and in order: the ids rise, one stream's number at a time, by one, and
    that number is the event's own `seq`; each stream is numbered from 1 and ends with `end`.
    Returns the events of each stream."""
    previous = (0,) * streams
    per_stream = [[] for _ in range(streams)]
    for raw_id, kind, data in events:
        current = parse_id(raw_id, streams)
        moved = [i for i in range(streams) if current[i] != previous[i]]
        check(len(moved) == 1, f"id {raw_id} after {previous}: one stream must move at a time")
        i = moved[0]
        check(current[i] == previous[i] + 1, f"id {raw_id} after {previous}: an event is missing or repeated")
        check(data["seq"] == current[i], f"id {raw_id} is not the event's seq {data['seq']}")
        per_stream[i].append((kind, data))
        previous = current
    for i, stream in enumerate(per_stream):
        check(stream, f"stream {i} had no event")
        check(stream[-1][0] == "end", f"stream {i} did not close with its end: {[k for k, _ in stream]}")
        check(all(k != "end" for k, _ in stream[:-1]), f"stream {i} has an `end` before its last event")
    return per_stream


def read_with_a_drop(url, streams, what):
    """Reads the stream in two connections, dropping the first after a few chunks; checks the
    order, the retry, and that a reconnect after the end is 204. Returns each stream's events."""
    first, retry = read(url, streams, stop_after_chunks=3)
    check(retry == 1000, f"{what}: the stream asked for retry {retry}, not 1000")
    kinds = [k for _, k, _ in first]
    check(kinds.count("chunk") == 3, f"{what}: the first connection should stop after 3 chunks: {kinds}")
    check("end" not in kinds, f"{what}: the stream ended before the client dropped it: {kinds}")
    rest, _ = read(url, streams, last_id=first[-1][0])
    check(rest, f"{what}: nothing came after {first[-1][0]}")
    per_stream = check_order(first + rest, streams)
    last = rest[-1][0]
    with httpx.Client(timeout=30) as client:
        after_end = client.get(url, headers={"Last-Event-ID": last, "Origin": ORIGIN})
    check(after_end.status_code == 204, f"{what}: a reconnect after the end answered {after_end.status_code}, not 204")
    print(
        f"streams-flow: {what}: {len(first)} events, dropped at {first[-1][0]}, "
        f"{len(rest)} more after Last-Event-ID to {last}; then 204"
    )
    return per_stream


def written_over(stream):
    """How long the answer took to write: its first chunk's time to its last's (server's)."""
    times = [d["at_ms"] for k, d in stream if k == "chunk"]
    return times[-1] - times[0]


def chunk_text(stream):
    return "".join(d["text"] for k, d in stream if k == "chunk")


def check_task_stream(events, what):
    kinds = [k for k, _ in events]
    check(kinds[0] == "start" and kinds[-1] == "end", f"{what}: {kinds}")
    check(all(k == "chunk" for k in kinds[1:-1]), f"{what}: one attempt, its chunks: {kinds}")
    check(kinds.count("chunk") > 4, f"{what}: the answer came in only {kinds.count('chunk')} chunks")
    check(events[-1][1]["status"] == "succeeded", f"{what}: ended {events[-1][1]}")


def task_stream_flow(api):
    text = sentence("A workflow task streams its answer")
    accepted = api.call(
        "POST",
        "/v1/workflows",
        (201, 202),
        {
            "name": "streams-flow",
            "tasks": [{"id": "answer", "capability": "streams.write", "stream": True, "input": {"text": text}}],
        },
    )
    workflow = accepted["workflow_id"]
    url = api.link(f"/v1/workflows/{workflow}/tasks/answer/events")
    (events,) = read_with_a_drop(url, 1, "task stream")
    check_task_stream(events, "task stream")
    print(f"streams-flow: task stream: {len(events) - 2} chunks written over {written_over(events)} ms")
    task = api.until(
        "the workflow's task",
        lambda: api.call("GET", f"/v1/workflows/{workflow}/tasks/answer", 200),
        lambda t: t["status"] in ("succeeded", "failed", "cancelled", "skipped"),
    )
    check(task["status"] == "succeeded", f"the task ended {task['status']}")
    streamed = chunk_text(events)
    check(
        task["output"]["content"] == streamed,
        f"the chunks do not add up to the recorded output:\n{streamed!r}\n{task['output']['content']!r}",
    )
    check(streamed == text.split(".")[0] + ".", f"the brief model's answer is not the first sentence: {streamed!r}")


def start_turn(api, session, text):
    turn = api.call("POST", f"/v1/sessions/{session}/messages", (200, 202), {"text": text, "wait": 0})
    check(turn.get("stream"), f"the turn names no stream: {turn}")
    return turn


def answered(api, session, turn):
    final = api.until(
        f"turn {turn}",
        lambda: api.call("GET", f"/v1/sessions/{session}/turns/{turn}", 200),
        lambda t: t["status"] not in ("running", "queued"),
    )
    check(final["status"] == "answered", f"turn {turn} ended {final['status']}: {final.get('error')}")
    return final


def turn_stream_flow(api, session):
    turn = start_turn(api, session, sentence("A turn streams its answer beside its helpers' milestones"))
    core = turn["agents"]["core"]
    check(turn["stream"].endswith(f"?task={core}"), f"the turn's stream is not its core agent's: {turn['stream']}")
    workflow_events, task_events = read_with_a_drop(api.link(turn["stream"]), 2, "turn stream")
    check_task_stream(task_events, "turn stream, answer")
    print(f"streams-flow: turn stream: {len(task_events) - 2} chunks written over {written_over(task_events)} ms")
    kinds = [k for k, _ in workflow_events]
    helpers = [s["agent"] for s in turn["agents"]["sync"]]
    for task in helpers + [core]:
        mine = [k for k, d in workflow_events if d.get("task") == task]
        check(
            mine[:2] == ["ready", "started"] and mine[-1] == "ended",
            f"turn stream: {task}'s milestones are {mine}",
        )
    check(kinds[-1] == "end", f"turn stream: the workflow's stream ends with {kinds[-1]}")
    final = answered(api, session, turn["turn"])
    check(
        final["response"] == chunk_text(task_events),
        f"the turn's response is not what streamed:\n{final['response']!r}\n{chunk_text(task_events)!r}",
    )


def check_preflight(url):
    """What a page's reconnect (with its Last-Event-ID header) asks first."""
    with httpx.Client(timeout=30) as client:
        answer = client.options(
            url,
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "last-event-id",
            },
        )
    check(answer.status_code in (200, 204), f"the preflight answered {answer.status_code}")
    allowed = answer.headers.get("access-control-allow-headers", "").lower()
    check(answer.headers.get("access-control-allow-origin") == ORIGIN, f"preflight: {dict(answer.headers)}")
    check("last-event-id" in allowed, f"preflight allows headers `{allowed}`, not last-event-id")


class PageHandler(http.server.SimpleHTTPRequestHandler):
    """Serves infra/streams_page.html alone, quietly."""

    def do_GET(self):
        if urllib.parse.urlsplit(self.path).path != "/streams_page.html":
            self.send_error(404)
            return
        super().do_GET()

    def log_message(self, *args):
        pass


def serve_page():
    handler = functools.partial(PageHandler, directory=os.path.dirname(PAGE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/streams_page.html"


def browser_flow(api, session, screenshot):
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    check(os.access(CHROMIUM, os.X_OK), f"no Chromium at {CHROMIUM}")
    server, page_url = serve_page()
    console = []
    try:
        with tempfile.TemporaryDirectory(prefix="streams-flow-chromium-") as profile, sync_playwright() as p:
            # The browser first, so that the page is reading before the answer streams.
            context = p.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                headless=True,
                args=CHROMIUM_FLAGS,
                viewport={"width": 900, "height": 760},
            )
            try:
                page = context.new_page()
                page.on("console", lambda m: console.append(f"console {m.type}: {m.text}"))
                page.on("pageerror", lambda e: console.append(f"page error: {e}"))
                turn = start_turn(api, session, sentence("A browser renders this answer as it streams"))
                link = api.link(turn["stream"])
                check_preflight(link)
                page.goto(f"{page_url}?stream={urllib.parse.quote(link, safe='')}")
                try:
                    page.wait_for_function("document.title === 'done'", timeout=TIMEOUT_S * 1000)
                except PlaywrightError as error:
                    page.screenshot(path=screenshot, full_page=True)
                    fail(
                        f"the page did not finish ({error}); it shows:\n{page.inner_text('body')}\n"
                        + "\n".join(console)
                        + f"\nscreenshot: {screenshot}"
                    )
                final = answered(api, session, turn["turn"])
                shown = page.inner_text("#answer")
                body = page.inner_text("body")
                log = page.evaluate("window.streamLog")
                page.screenshot(path=screenshot, full_page=True)
            finally:
                context.close()
    finally:
        server.shutdown()
        server.server_close()
    check(final["response"] in body, f"the page does not show the turn's response:\n{final['response']!r}\n{body}")
    check(
        shown == final["response"], f"the page's answer is not the turn's response:\n{shown!r}\n{final['response']!r}"
    )
    for helper in [s["agent"] for s in turn["agents"]["sync"]]:
        check(f"{helper} ended succeeded" in body, f"the page lists no end of {helper}:\n{body}")
    # Rendered as it arrived: the chunks came over time, not in one piece at the end.
    chunk_times = [at for _, kind, at in log if kind == "chunk"]
    check(len(chunk_times) > 4, f"the page got {len(chunk_times)} chunks")
    spread = chunk_times[-1] - chunk_times[0]
    check(spread >= 300 and len(set(chunk_times)) >= 3, f"the chunks came all at once: {log}")
    check(not [c for c in console if "error" in c.lower()], "the page logged errors:\n" + "\n".join(console))
    print(
        f"streams-flow: Chromium rendered turn {turn['turn']}: {len(log)} events, "
        f"{len(chunk_times)} chunks over {spread} ms; screenshot {screenshot}"
    )


def main(base, screenshot):
    started = time.monotonic()
    api = Api(base)
    register_streamers(api)
    task_stream_flow(api)
    print(f"streams-flow: the task stream checked ({time.monotonic() - started:.1f} s)")
    helpers = ["privacy", "followup", "nutrition"]
    session = api.call("POST", "/v1/sessions", 201, {"agents": helpers + ["streams-talker"]})["session_id"]
    turn_stream_flow(api, session)
    print(f"streams-flow: the turn stream checked ({time.monotonic() - started:.1f} s)")
    os.makedirs(os.path.dirname(os.path.abspath(screenshot)), exist_ok=True)
    browser_flow(api, session, screenshot)
    print(f"streams-flow: passed in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])

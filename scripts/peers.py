#!/usr/bin/env python3
"""The gateway against peers nobody here wrote: the real binary, the demo marketplace in a
database of its own, Python `websockets` as upstream and client, curl for TLS.

Each case points the demo Echo API at an upstream it starts on 127.0.0.1, calls through a gateway
process, and checks what the client saw and what the meter stored. Prints one line per case and
"peers: N passed, M failed". Run by scripts/peers.sh (which `make test` runs).
Environment: TOLLGATE_BIN (the binary), PEERS_DATABASE (default tollgate_peers, in the private
cluster; recreated), ROOT.
"""
import asyncio
import http.client
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import websockets
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

ROOT = os.environ.get("ROOT") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ["TOLLGATE_BIN"]
DATABASE = os.environ.get("PEERS_DATABASE", "tollgate_peers")
DATABASE_URL = subprocess.run([os.path.join(ROOT, "scripts", "pg.sh"), "url", DATABASE], capture_output=True, text=True, check=True).stdout.strip()


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Installation:
    """A migrated, seeded database, development certificates and one gateway process with a
    plaintext and a TLS listener."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="tollgate-peers-")
        self.port = free_port()
        self.tls_port = free_port()
        self.env = dict(
            os.environ, DATABASE_URL=DATABASE_URL, TOLLGATE_DATA_DIR=self.dir, GATEWAY_ADDRESS=f"127.0.0.1:{self.port}",
            GATEWAY_TLS_ADDRESS=f"127.0.0.1:{self.tls_port}", TOLLGATE_MIGRATIONS_DIR=os.path.join(ROOT, "migrations"),
            TOLLGATE_TEMPLATES_DIR=os.path.join(ROOT, "templates"), TOLLGATE_WEBSOCKET_IDLE_SECONDS="2",
            TOLLGATE_REQUEST_BODY_SECONDS="3")
        subprocess.run([BIN, "migrate"], env=self.env, check=True, capture_output=True)
        seeded = subprocess.run([BIN, "seed-demo", "--json"], env=self.env, capture_output=True, text=True, check=True)
        self.api_key = json.loads(seeded.stdout)["api_key"]
        subprocess.run([BIN, "dev-certs"], env=self.env, check=True, capture_output=True)
        self.ca = os.path.join(self.dir, "tls", "ca.pem")
        self.log = open(os.path.join(self.dir, "gateway.log"), "a")
        self.gateway = subprocess.Popen([BIN, "gateway"], env=self.env, stdout=self.log, stderr=self.log)
        deadline = time.time() + 40
        while (self.readyz() or {}).get("status") != "ready":
            if time.time() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.1)

    def readyz(self):
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            c.request("GET", "/readyz")
            response = c.getresponse()
            body = response.read()
            c.close()
            return json.loads(body) if response.status in (200, 503) else None
        except Exception:
            return None

    def sql(self, statement):
        # as the cluster's superuser: usage rows are tenant-isolated from the application's role
        result = subprocess.run([os.path.join(ROOT, "scripts", "pg.sh"), "psql", "-d", DATABASE, "-qAt", "-c", statement],
                                capture_output=True, text=True, check=True)
        return result.stdout.strip()

    def route_echo_to(self, url, slug="echo"):
        """Points the demo API `slug` at `url` and waits until the gateway's snapshot has it."""
        before = (self.readyz() or {}).get("snapshot_version")
        self.sql(f"UPDATE api_upstream_targets SET url = '{url}' WHERE api_id IN (SELECT id FROM apis WHERE slug = '{slug}')")
        deadline = time.time() + 10
        while (self.readyz() or {}).get("snapshot_version") == before and time.time() < deadline:
            time.sleep(0.05)
        # the version may have moved for an earlier change (a plan edit, say) whose reload began
        # before this one: give the reload this change caused time to land too
        time.sleep(0.5)

    def wait_written(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            meter = (self.readyz() or {}).get("meter") or {}
            if meter.get("backlog_events") == 0 and meter.get("state") == "writing":
                return
            time.sleep(0.1)
        raise AssertionError(f"the meter did not catch up: {self.readyz()}")

    def close(self):
        self.gateway.terminate()
        try:
            self.gateway.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.gateway.kill()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class EchoServer:
    """A `websockets` echo server on its own thread and loop; keeps the handshake headers it saw.
    With `certificate` (chain and key files) it speaks TLS."""

    def __init__(self, certificate=None):
        self.port = free_port()
        self.tls = None
        if certificate:
            self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls.load_cert_chain(*certificate)
        self.request_headers = []
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.start(), self.loop).result(timeout=10)

    async def start(self):
        async def echo(connection):
            self.request_headers.append(dict((k.lower(), v) for k, v in connection.request.headers.raw_items()))
            try:
                async for message in connection:
                    await connection.send(message)
            except websockets.exceptions.ConnectionClosed:
                pass  # the gateway closing an idle tunnel sends no close frame

        self.server = await serve(echo, "127.0.0.1", self.port, ssl=self.tls)

    def close(self):
        async def stop():
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


def expect(condition, message):
    if not condition:
        raise AssertionError(message)


def last_event(install):
    row = install.sql("SELECT status, bytes_in, bytes_out, forwarded FROM usage_events ORDER BY at DESC, id DESC LIMIT 1")
    status, bytes_in, bytes_out, forwarded = row.split("|")
    return int(status), int(bytes_in), int(bytes_out), forwarded == "t"


def websocket_echo(install):
    """A stock WebSocket client talks to a stock WebSocket server through the gateway."""
    upstream = EchoServer()
    try:
        install.route_echo_to(f"http://127.0.0.1:{upstream.port}")
        before = int(install.sql("SELECT count(*) FROM usage_events"))

        async def talk():
            uri = f"ws://127.0.0.1:{install.port}/t/demo/echo/v1/chat"
            async with connect(uri, additional_headers={"X-API-Key": install.api_key}) as ws:
                expect(ws.response.headers.get("X-Request-Id"), "the 101 carries the gateway's request id")
                await ws.send("hello through the gateway")
                expect(await ws.recv() == "hello through the gateway", "text frame echoed")
                payload = os.urandom(16 * 1024)  # incompressible: permessage-deflate is on by default
                await ws.send(payload)
                expect(await ws.recv() == payload, "binary frame echoed whole")
            return len(payload)

        sent = asyncio.run(talk())
        expect(len(upstream.request_headers) == 1, "the upstream saw one handshake")
        seen = upstream.request_headers[0]
        expect("x-api-key" not in seen, "the credential stays at the gateway")
        expect(seen.get("x-tollgate-app-id"), "the upstream is told the app")
        install.wait_written()
        expect(int(install.sql("SELECT count(*) FROM usage_events")) == before + 1, "one call metered for the whole conversation")
        status, bytes_in, bytes_out, forwarded = last_event(install)
        expect(status == 101 and forwarded, f"metered as a forwarded 101, got {status} {forwarded}")
        expect(bytes_in > sent and bytes_out > sent, f"frame bytes counted both ways ({bytes_in} in, {bytes_out} out)")
    finally:
        upstream.close()


def websocket_refused_without_credential(install):
    """A stock client is refused with the gateway's 401 and the upstream never sees the handshake."""
    upstream = EchoServer()
    try:
        install.route_echo_to(f"http://127.0.0.1:{upstream.port}")

        async def talk():
            try:
                async with connect(f"ws://127.0.0.1:{install.port}/t/demo/echo/v1/chat"):
                    return None
            except websockets.exceptions.InvalidStatus as refused:
                return refused.response.status_code

        expect(asyncio.run(talk()) == 401, "refused with 401")
        expect(upstream.request_headers == [], "the upstream never heard of it")
    finally:
        upstream.close()


def websocket_over_tls_closed_when_idle(install):
    """wss:// on the gateway's TLS listener (development CA); the gateway closes an idle tunnel."""
    upstream = EchoServer()
    try:
        install.route_echo_to(f"http://127.0.0.1:{upstream.port}")
        context = ssl.create_default_context(cafile=install.ca)

        async def talk():
            uri = f"wss://localhost:{install.tls_port}/t/demo/echo/v1/chat"
            async with connect(uri, additional_headers={"X-API-Key": install.api_key}, ssl=context, ping_interval=None) as ws:
                await ws.send("over tls")
                expect(await ws.recv() == "over tls", "echoed over TLS")
                started = time.time()
                try:
                    await asyncio.wait_for(ws.recv(), timeout=10)
                    return None
                except websockets.exceptions.ConnectionClosed:
                    return time.time() - started

        idle_for = asyncio.run(talk())
        expect(idle_for is not None and 1.5 <= idle_for <= 6, f"closed by the gateway after ~2 s idle, got {idle_for}")
    finally:
        upstream.close()


def curl_over_tls(install):
    """curl trusts the development CA and gets the demo upstream's answer over TLS."""
    demo = subprocess.Popen([BIN, "demo-upstream", "--port", str(port := free_port())], env=install.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        install.route_echo_to(f"http://127.0.0.1:{port}")
        time.sleep(0.3)
        result = subprocess.run(
            ["curl", "-sS", "--max-time", "10", "--cacert", install.ca, "-H", f"X-API-Key: {install.api_key}",
             "-o", "/dev/null", "-w", "%{http_code} %{ssl_verify_result} %{scheme}",
             f"https://localhost:{install.tls_port}/t/demo/echo/v1/hello"], capture_output=True, text=True)
        expect(result.stdout.strip() == "200 0 HTTPS", f"curl got {result.stdout.strip()!r} {result.stderr.strip()}")
    finally:
        demo.kill()
        demo.wait()


class DemoUpstream:
    """The binary's own demo upstreams on free ports: Echo (answers with what it received, as JSON)
    and the Greeter gRPC service."""

    def __init__(self, install):
        self.port = free_port()
        self.grpc_port = free_port()
        self.process = subprocess.Popen([BIN, "demo-upstream", "--port", str(self.port), "--grpc-port", str(self.grpc_port)], env=install.env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import socket
        deadline = time.time() + 10
        for port in (self.grpc_port, self.port):  # the gRPC service is bound first
            while time.time() < deadline:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        break
                except OSError:
                    time.sleep(0.05)

    def close(self):
        self.process.kill()
        self.process.wait()


def curl(*args, data=None):
    result = subprocess.run(["curl", "-sS", "--max-time", "10", *args], capture_output=True, text=True, input=data or "")
    return result.stdout, result.stderr


def http2_with_curl(install):
    """curl speaks HTTP/2: prior knowledge on the plaintext listener, ALPN h2 on TLS; the answers and
    the metering are those of HTTP/1.1, refusals included."""
    demo = DemoUpstream(install)
    try:
        install.route_echo_to(f"http://127.0.0.1:{demo.port}")
        before = int(install.sql("SELECT count(*) FROM usage_events"))
        out, err = curl("--http2-prior-knowledge", "-H", f"X-API-Key: {install.api_key}", "-w", "\n%{http_version} %{http_code}",
                        f"http://127.0.0.1:{install.port}/t/demo/echo/v1/hello?x=1")
        body, _, tail = out.rpartition("\n")
        expect(tail == "2 200", f"h2c prior knowledge: {tail!r} {err}")
        echoed = json.loads(body)
        expect(echoed.get("path", "").startswith("/hello"), f"the upstream got the path: {echoed}")
        out, err = curl("--http2", "--cacert", install.ca, "-H", f"X-API-Key: {install.api_key}", "-D", "-", "-o", "/dev/null",
                        "-w", "%{http_version} %{http_code}", f"https://localhost:{install.tls_port}/t/demo/echo/v1/hello")
        expect(out.strip().endswith("2 200"), f"h2 over TLS: {out!r} {err}")
        expect("ratelimit-policy:" in out.lower() and "x-request-id:" in out.lower(), f"the gateway's headers on h2: {out}")
        # a POST with a body of unknown length (no content-length) reaches the HTTP/1.1 upstream chunked
        sent = json.dumps({"name": "streamed", "filler": "x" * 40000})
        out, err = curl("--http2-prior-knowledge", "-H", f"X-API-Key: {install.api_key}", "-H", "Content-Type: application/json",
                        "--data-binary", "@-", f"http://127.0.0.1:{install.port}/t/demo/echo/v1/items", data=sent)
        echoed = json.loads(out)
        expect(echoed.get("method") == "POST", f"POST over h2 reached the upstream: {out[:200]} {err}")
        expect(echoed.get("body_bytes") == len(sent) or echoed.get("body") == sent, f"the whole body arrived: {str(echoed)[:300]}")
        # `-T -`: a body of unknown length, so no content-length; the gateway chunks it for HTTP/1.1
        out, err = curl("--http2-prior-knowledge", "-H", f"X-API-Key: {install.api_key}", "-X", "POST", "-T", "-",
                        f"http://127.0.0.1:{install.port}/t/demo/echo/v1/upload", data=sent)
        echoed = json.loads(out)
        headers = {k.lower(): v for k, v in echoed.get("headers", {}).items()}
        expect(echoed.get("body_bytes") == len(sent), f"the streamed body arrived whole: {str(echoed)[:300]} {err}")
        expect("chunked" in str(headers.get("transfer-encoding", "")), f"sent chunked to the upstream: {headers}")
        out, err = curl("--http2-prior-knowledge", "-w", "\n%{http_code}", f"http://127.0.0.1:{install.port}/t/demo/echo/v1/hello")
        expect(out.endswith("\n401"), f"no credential over h2 is 401: {out!r}")
        install.wait_written()
        stored = int(install.sql("SELECT count(*) FROM usage_events"))
        expect(stored == before + 5, f"each stream metered once ({stored - before} of 5)")
    finally:
        demo.close()


class HypercornUpstream:
    """Hypercorn (an ASGI server on the `h2` library) on its own thread: HTTP/2 with prior knowledge
    on cleartext, or TLS with the ALPN protocols given. Answers with what it received as JSON,
    including the HTTP version it was spoken to with."""

    def __init__(self, certfile=None, keyfile=None, alpn=("h2", "http/1.1")):
        from hypercorn.asyncio import serve
        from hypercorn.config import Config
        self.port = free_port()
        config = Config()
        config.bind = [f"127.0.0.1:{self.port}"]
        config.accesslog = None
        config.errorlog = None
        if certfile:
            config.certfile, config.keyfile = certfile, keyfile
            config.alpn_protocols = list(alpn)
        self.loop = asyncio.new_event_loop()
        self.stopped = None

        async def app(scope, receive, send):
            if scope["type"] == "lifespan":
                while (await receive())["type"] != "lifespan.shutdown":
                    await send({"type": "lifespan.startup.complete"})
                await send({"type": "lifespan.shutdown.complete"})
                return
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            answer = json.dumps({"http_version": scope["http_version"], "method": scope["method"], "path": scope["path"],
                                 "body_bytes": len(body), "headers": {k.decode(): v.decode() for k, v in scope["headers"]}}).encode()
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": answer})

        async def run():
            self.stopped = asyncio.Event()
            await serve(app, config, shutdown_trigger=self.stopped.wait)

        self.thread = threading.Thread(target=lambda: self.loop.run_until_complete(run()), daemon=True)
        self.thread.start()
        import socket
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)

    def close(self):
        if self.stopped is not None:
            self.loop.call_soon_threadsafe(self.stopped.set)
        self.thread.join(timeout=10)


def h2_upstream_with_curl(install):
    """An API whose upstream protocol is h2 reaches Hypercorn over HTTP/2 — h2c prior knowledge, and
    ALPN h2 over TLS — from curl speaking HTTP/1.1 and HTTP/2; a TLS upstream that only offers
    http/1.1 is a 502 that says so and is not billable."""
    tls_dir = os.path.join(install.dir, "tls")
    with open(install.ca) as ca_file:
        ca_pem = ca_file.read().replace("'", "")
    plain = HypercornUpstream()
    secure = HypercornUpstream(os.path.join(tls_dir, "default.pem"), os.path.join(tls_dir, "default.key"), alpn=("h2",))
    http1_only = HypercornUpstream(os.path.join(tls_dir, "default.pem"), os.path.join(tls_dir, "default.key"), alpn=("http/1.1",))
    try:
        install.sql(f"UPDATE apis SET upstream_protocol = 'h2', upstream_ca_pem = '{ca_pem}' WHERE slug = 'echo'")
        install.route_echo_to(f"http://127.0.0.1:{plain.port}/up")
        before = int(install.sql("SELECT count(*) FROM usage_events"))
        for flag in ("--http1.1", "--http2-prior-knowledge"):
            out, err = curl(flag, "-H", f"X-API-Key: {install.api_key}", "-w", "\n%{http_code}", f"http://127.0.0.1:{install.port}/t/demo/echo/v1/hello?x=1")
            body, _, code = out.rpartition("\n")
            expect(code == "200", f"{flag} to an h2c upstream: {out!r} {err}")
            echoed = json.loads(body)
            expect(echoed["http_version"] == "2" and echoed["path"] == "/up/hello", f"the upstream heard HTTP/2: {echoed}")
            expect("x-api-key" not in echoed["headers"] and echoed["headers"].get("x-request-id"), f"the gateway's headers: {echoed['headers']}")
        sent = "x" * 100000
        out, err = curl("--http2-prior-knowledge", "-H", f"X-API-Key: {install.api_key}", "-X", "POST", "-T", "-",
                        f"http://127.0.0.1:{install.port}/t/demo/echo/v1/upload", data=sent)
        expect(json.loads(out).get("body_bytes") == len(sent), f"a streamed body arrived whole: {out[:200]} {err}")
        install.route_echo_to(f"https://localhost:{secure.port}")
        for flag in ("--http1.1", "--http2"):
            out, err = curl(flag, "--cacert", install.ca, "-H", f"X-API-Key: {install.api_key}", "-w", "\n%{http_code}",
                            f"https://localhost:{install.tls_port}/t/demo/echo/v1/secure")
            body, _, code = out.rpartition("\n")
            expect(code == "200" and json.loads(body)["http_version"] == "2", f"{flag} to a TLS h2 upstream: {out!r} {err}")
        install.route_echo_to(f"https://localhost:{http1_only.port}")
        out, err = curl("--http2-prior-knowledge", "-H", f"X-API-Key: {install.api_key}", "-w", "\n%{http_code}",
                        f"http://127.0.0.1:{install.port}/t/demo/echo/v1/hello")
        body, _, code = out.rpartition("\n")
        expect(code == "502" and "HTTP/2" in body, f"no ALPN h2 is a 502 saying so: {out!r}")
        install.wait_written()
        rows = install.sql(f"SELECT status, billable FROM usage_events ORDER BY at DESC, id DESC LIMIT 6").splitlines()
        expect(int(install.sql("SELECT count(*) FROM usage_events")) == before + 6, "each call metered once")
        expect(rows[0] == "502|f" and all(row == "200|t" for row in rows[1:]), f"metered: {rows}")
    finally:
        install.sql("UPDATE apis SET upstream_protocol = 'http1', upstream_ca_pem = NULL WHERE slug = 'echo'")
        for upstream in (plain, secure, http1_only):
            upstream.close()


class RawH2:
    """An HTTP/2 client connection driven frame by frame with the `h2` library, for the abuse cases
    a well-behaved client never produces."""

    def __init__(self, port):
        import socket
        import h2.config
        import h2.connection
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.flush()
        self.events = []
        self.closed = False

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def pump(self, seconds):
        """Reads frames for up to `seconds` or until the gateway closes; returns the events."""
        import socket
        deadline = time.time() + seconds
        while time.time() < deadline and not self.closed:
            self.sock.settimeout(max(0.01, deadline - time.time()))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                break
            except OSError:
                self.closed = True
                break
            if not data:
                self.closed = True
                break
            try:
                self.events += self.conn.receive_data(data)
                self.flush()
            except Exception:
                self.closed = True
        return self.events

    def close(self):
        self.sock.close()


class SilentUpstream:
    """Accepts connections and never answers."""

    def __init__(self):
        import socket
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(256)
        self.port = self.listener.getsockname()[1]
        self.held = []
        self.thread = threading.Thread(target=self.accept, daemon=True)
        self.thread.start()

    def accept(self):
        while True:
            try:
                self.held.append(self.listener.accept()[0])
            except OSError:
                return

    def close(self):
        self.listener.close()
        for connection in self.held:
            connection.close()


def request_headers(install, path="/t/demo/echo/v1/hello", extra=()):
    return [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", f"127.0.0.1:{install.port}"),
            ("x-api-key", install.api_key), *extra]


class WebSocketOverH2:
    """A WebSocket on one HTTP/2 stream (RFC 8441), from stock parts: `h2` speaks HTTP/2 (prior
    knowledge, h2c) and opens the stream with extended CONNECT, `wsproto` frames the WebSocket
    messages (its `Connection` has no handshake of its own: the CONNECT is the handshake). Flow
    control is honoured both ways: DATA is sent within the windows and acknowledged when read."""

    def __init__(self, install, headers):
        import h2.events
        import h2.settings
        import wsproto.connection
        self.h2 = RawH2(install.port)
        self.seen = 0
        self.pump_until(lambda: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in self.h2.events))
        self.advertised = self.h2.conn.remote_settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL) == 1
        self.stream = self.h2.conn.get_next_available_stream_id()
        self.h2.conn.send_headers(self.stream, [
            (":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"), (":path", "/t/demo/echo/v1/chat"),
            (":authority", f"127.0.0.1:{install.port}"), ("sec-websocket-version", "13"), *headers])
        self.h2.flush()
        self.pump_until(lambda: self.response() is not None or self.ended())
        self.ws = wsproto.connection.Connection(wsproto.connection.ConnectionType.CLIENT)
        self.fed = len(self.h2.events)  # events up to the 200 are not WebSocket bytes

    def pump_until(self, done, seconds=10):
        import h2.events
        deadline = time.time() + seconds
        while not done() and time.time() < deadline and not self.h2.closed:
            self.h2.pump(0.1)
            for event in self.h2.events[self.seen:]:
                if isinstance(event, h2.events.DataReceived):
                    self.h2.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            self.seen = len(self.h2.events)
            self.h2.flush()
        return done()

    def response(self):
        import h2.events
        answered = [e for e in self.h2.events if isinstance(e, h2.events.ResponseReceived) and e.stream_id == self.stream]
        return dict(answered[0].headers) if answered else None

    def ended(self):
        import h2.events
        return any(isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)) and e.stream_id == self.stream for e in self.h2.events)

    def body(self):
        import h2.events
        return b"".join(e.data for e in self.h2.events if isinstance(e, h2.events.DataReceived) and e.stream_id == self.stream)

    def send(self, event):
        data = self.ws.send(event)
        while data:
            window = min(self.h2.conn.local_flow_control_window(self.stream), self.h2.conn.max_outbound_frame_size)
            if window <= 0:
                self.pump_until(lambda: self.h2.conn.local_flow_control_window(self.stream) > 0, seconds=5)
                continue
            self.h2.conn.send_data(self.stream, data[:window])
            data = data[window:]
            self.h2.flush()

    def receive(self, count=1, seconds=10):
        """The next `count` whole messages (text or bytes) from the tunnel."""
        import h2.events
        import wsproto.events
        messages, parts = [], []

        def arrived():
            for event in self.h2.events[self.fed:]:
                if isinstance(event, h2.events.DataReceived) and event.stream_id == self.stream:
                    self.ws.receive_data(event.data)
            self.fed = len(self.h2.events)
            for event in self.ws.events():
                if isinstance(event, wsproto.events.Message):
                    parts.append(event.data)
                    if event.message_finished:
                        messages.append("".join(parts) if isinstance(event.data, str) else b"".join(parts))
                        parts.clear()
            return len(messages) >= count

        self.pump_until(arrived, seconds)
        return messages

    def close(self):
        self.h2.close()


def websocket_over_http2(install):
    """RFC 8441: an `h2` + `wsproto` client opens a WebSocket on an HTTP/2 stream through the
    gateway to a stock `websockets` server; text and a binary message larger than every
    flow-control window cross both ways; the call is metered once, when it closes, with its bytes."""
    import wsproto.events
    upstream = EchoServer()
    client = None
    try:
        install.route_echo_to(f"http://127.0.0.1:{upstream.port}")
        before = int(install.sql("SELECT count(*) FROM usage_events"))
        client = WebSocketOverH2(install, [("x-api-key", install.api_key), ("sec-websocket-protocol", "chat, superchat")])
        expect(client.advertised, "the gateway advertises SETTINGS_ENABLE_CONNECT_PROTOCOL")
        answer = client.response() or {}
        expect(answer.get(":status") == "200", f"the stream is accepted with 200: {answer} {client.body()[:200]!r}")
        expect(answer.get("x-request-id") and answer.get("ratelimit-policy"), f"the gateway's headers on the 200: {answer}")
        expect("sec-websocket-accept" not in answer, "no accept over HTTP/2 (RFC 8441 §5)")
        client.send(wsproto.events.TextMessage(data="hello over h2"))
        expect(client.receive() == ["hello over h2"], "text message echoed")
        payload = os.urandom(200 * 1024)  # beyond the 64 KiB windows: both directions must wait for WINDOW_UPDATE
        client.send(wsproto.events.BytesMessage(data=payload))
        expect(client.receive(seconds=20) == [payload], "a 200 KiB binary message echoed whole")
        expect(len(upstream.request_headers) == 1, "the upstream saw one handshake")
        seen = upstream.request_headers[0]
        expect(seen.get("upgrade", "").lower() == "websocket" and seen.get("sec-websocket-version") == "13", f"an HTTP/1.1 upgrade upstream: {seen}")
        expect(seen.get("sec-websocket-key"), "the gateway made the handshake key")
        expect(seen.get("sec-websocket-protocol") == "chat, superchat", f"the client's subprotocols were forwarded: {seen}")
        expect("x-api-key" not in seen and seen.get("x-tollgate-app-id"), "the credential stays at the gateway; the app is named")
        client.send(wsproto.events.CloseConnection(code=1000))
        client.pump_until(client.ended)
        expect(client.ended(), "the stream ends after the close handshake")
        install.wait_written()
        expect(int(install.sql("SELECT count(*) FROM usage_events")) == before + 1, "one call metered for the whole conversation")
        status, bytes_in, bytes_out, forwarded = last_event(install)
        expect(status == 101 and forwarded, f"metered as a forwarded tunnel (101), got {status} {forwarded}")
        expect(bytes_in > len(payload) and bytes_out > len(payload), f"frame bytes counted both ways ({bytes_in} in, {bytes_out} out)")
    finally:
        if client:
            client.close()
        upstream.close()


def websocket_to_an_h2_api(install):
    """An API whose upstream protocol is h2 still takes WebSockets: a stock `websockets` client
    (HTTP/1.1 Upgrade) and an `h2` + `wsproto` client (RFC 8441) both reach a stock `websockets`
    server (HTTP/1.1 only), which the gateway calls over an HTTP/1.1 connection of the handshake's
    own, as nginx does (an HTTP/2 stream cannot switch protocols); each conversation is metered once.
    The same over TLS: an https target whose server offers no h2 still takes the handshake (its
    connection offers ALPN http/1.1 only, verified against the API's CA bundle)."""
    import wsproto.events
    upstream = EchoServer()
    tls_dir = os.path.join(install.dir, "tls")
    secure = EchoServer((os.path.join(tls_dir, "default.pem"), os.path.join(tls_dir, "default.key")))
    with open(install.ca) as ca_file:
        ca_pem = ca_file.read().replace("'", "")
    client = None
    try:
        install.sql("UPDATE apis SET upstream_protocol = 'h2' WHERE slug = 'echo'")
        install.route_echo_to(f"http://127.0.0.1:{upstream.port}")
        before = int(install.sql("SELECT count(*) FROM usage_events"))

        async def talk(text="hello, h2 API"):
            uri = f"ws://127.0.0.1:{install.port}/t/demo/echo/v1/chat"
            async with connect(uri, additional_headers={"X-API-Key": install.api_key}) as ws:
                await ws.send(text)
                expect(await ws.recv() == text, f"HTTP/1.1 client: text frame echoed ({text})")

        asyncio.run(talk())
        client = WebSocketOverH2(install, [("x-api-key", install.api_key)])
        answer = client.response() or {}
        expect(answer.get(":status") == "200", f"the RFC 8441 stream is accepted with 200: {answer} {client.body()[:200]!r}")
        client.send(wsproto.events.TextMessage(data="hello over h2"))
        expect(client.receive() == ["hello over h2"], "HTTP/2 client: text message echoed")
        client.send(wsproto.events.CloseConnection(code=1000))
        client.pump_until(client.ended)
        expect(len(upstream.request_headers) == 2, f"the upstream saw two handshakes: {upstream.request_headers}")
        expect(all(seen.get("upgrade", "").lower() == "websocket" for seen in upstream.request_headers), "both as HTTP/1.1 upgrades")
        install.wait_written()
        rows = install.sql("SELECT status, forwarded FROM usage_events ORDER BY at DESC, id DESC LIMIT 2").splitlines()
        expect(int(install.sql("SELECT count(*) FROM usage_events")) == before + 2, "each conversation metered once")
        expect(rows == ["101|t", "101|t"], f"metered as forwarded tunnels: {rows}")

        install.sql(f"UPDATE apis SET upstream_ca_pem = '{ca_pem}' WHERE slug = 'echo'")
        install.route_echo_to(f"https://localhost:{secure.port}")
        asyncio.run(talk("hello, TLS h2 API"))
        expect(len(secure.request_headers) == 1 and secure.request_headers[0].get("upgrade", "").lower() == "websocket",
               f"the TLS upstream saw one HTTP/1.1 upgrade: {secure.request_headers}")
        install.wait_written()
        expect(int(install.sql("SELECT count(*) FROM usage_events")) == before + 3, "the TLS conversation metered once")
        expect(last_event(install)[0] == 101, f"metered as a forwarded tunnel: {last_event(install)}")
    finally:
        install.sql("UPDATE apis SET upstream_protocol = 'http1', upstream_ca_pem = NULL WHERE slug = 'echo'")
        if client:
            client.close()
        upstream.close()
        secure.close()


def websocket_over_http2_closed_when_idle(install):
    """The gateway ends an idle WebSocket stream (TOLLGATE_WEBSOCKET_IDLE_SECONDS=2 here) and
    meters it once; the connection itself stays usable."""
    import wsproto.events
    upstream = EchoServer()
    client = None
    try:
        install.route_echo_to(f"http://127.0.0.1:{upstream.port}")
        before = int(install.sql("SELECT count(*) FROM usage_events"))
        client = WebSocketOverH2(install, [("x-api-key", install.api_key)])
        expect((client.response() or {}).get(":status") == "200", f"accepted: {client.response()}")
        client.send(wsproto.events.TextMessage(data="then silence"))
        expect(client.receive() == ["then silence"], "echoed")
        started = time.time()
        expect(client.pump_until(client.ended, seconds=15), "the gateway ends the idle stream")
        idle_for = time.time() - started
        expect(1.5 <= idle_for <= 12, f"ended after ~2 s idle, got {idle_for:.1f} s")
        expect(not client.h2.closed, "only the stream ended, not the connection")
        install.wait_written()
        expect(int(install.sql("SELECT count(*) FROM usage_events")) == before + 1, "metered once")
        status, bytes_in, bytes_out, forwarded = last_event(install)
        expect(status == 101 and forwarded and bytes_in > 0 and bytes_out > 0, f"metered as a tunnel: {status} {bytes_in} {bytes_out}")
    finally:
        if client:
            client.close()
        upstream.close()

def websocket_over_http2_keeps_the_apis_own_idle_limit(install):
    """The API's `websocket` policy (stored as the portal stores it) replaces the installation's
    idle timeout (2 s here) for its tunnels: a quiet HTTP/2 WebSocket stays open past it."""
    import wsproto.events
    upstream = EchoServer()
    client = None
    policy = ("INSERT INTO api_policies (tenant_id, api_id, position, kind, phase, config) "
              "SELECT tenant_id, id, COALESCE((SELECT max(position) + 1 FROM api_policies p WHERE p.api_id = apis.id), 0), 'websocket', "
              "'response', '{\"idle_seconds\": 60}' FROM apis WHERE slug = 'echo'")
    try:
        install.route_echo_to(f"http://127.0.0.1:{upstream.port}")
        before = (install.readyz() or {}).get("snapshot_version")
        install.sql(policy)
        deadline = time.time() + 10
        while (install.readyz() or {}).get("snapshot_version") == before and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        client = WebSocketOverH2(install, [("x-api-key", install.api_key)])
        expect((client.response() or {}).get(":status") == "200", f"accepted: {client.response()}")
        client.pump_until(client.ended, seconds=4)  # twice the installation's idle timeout, quiet
        expect(not client.ended(), "the API's 60 s idle limit kept the quiet tunnel open")
        client.send(wsproto.events.TextMessage(data="still here"))
        expect(client.receive() == ["still here"], "and it still carries messages")
    finally:
        install.sql("DELETE FROM api_policies WHERE kind = 'websocket'")
        if client:
            client.close()
        upstream.close()

class CannedUpstream:
    """Answers every connection's request head with `reply` (bytes) and keeps what it heard."""

    def __init__(self, reply):
        import socket
        self.reply = reply
        self.heads = []
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                connection = self.listener.accept()[0]
            except OSError:
                return
            data = b""
            connection.settimeout(5)
            try:
                while b"\r\n\r\n" not in data:
                    chunk = connection.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                self.heads.append(data.decode("latin-1"))
                connection.sendall(self.reply)
                time.sleep(0.5)
            except OSError:
                pass
            connection.close()

    def close(self):
        self.listener.close()


def websocket_over_http2_upstream_answers_as_it_answered(install):
    """Over HTTP/2, an upstream that refuses the upgrade is relayed as it answered (its status and
    body on the stream), and one whose Sec-WebSocket-Accept does not answer the gateway's key is a
    502 — the client never gets a tunnel the gateway could not verify."""
    refusing = CannedUpstream(b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nnot today")
    forging = CannedUpstream(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                             b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
    clients = []
    try:
        install.route_echo_to(f"http://127.0.0.1:{refusing.port}")
        client = WebSocketOverH2(install, [("x-api-key", install.api_key)])
        clients.append(client)
        client.pump_until(client.ended)
        expect((client.response() or {}).get(":status") == "403", f"the upstream's refusal: {client.response()}")
        expect(client.body() == b"not today", f"with its body: {client.body()!r}")
        expect(refusing.heads and "sec-websocket-key:" in refusing.heads[0].lower(), f"the upstream heard a handshake: {refusing.heads}")
        install.route_echo_to(f"http://127.0.0.1:{forging.port}")
        client = WebSocketOverH2(install, [("x-api-key", install.api_key)])
        clients.append(client)
        client.pump_until(client.ended)
        expect((client.response() or {}).get(":status") == "502", f"a wrong accept is a 502: {client.response()} {client.body()[:200]!r}")
        expect(b"Sec-WebSocket-Accept" in client.body(), f"saying why: {client.body()[:200]!r}")
    finally:
        for client in clients:
            client.close()
        refusing.close()
        forging.close()

def websocket_over_http2_refused_without_credential(install):
    """An extended CONNECT without a credential is answered 401 on its stream, like any call; the
    upstream never hears of it and the connection stays usable."""
    upstream = EchoServer()
    client = None
    try:
        install.route_echo_to(f"http://127.0.0.1:{upstream.port}")
        client = WebSocketOverH2(install, [])
        answer = client.response() or {}
        expect(answer.get(":status") == "401", f"refused with 401 on the stream: {answer}")
        client.pump_until(client.ended)
        problem = json.loads(client.body() or b"{}")
        expect(problem.get("status") == 401, f"with a problem body: {client.body()[:200]!r}")
        expect(not client.h2.closed, "the connection is still open")
        expect(upstream.request_headers == [], "the upstream never heard of it")
    finally:
        if client:
            client.close()
        upstream.close()


def http2_abuse_is_bounded(install):
    """Rapid reset, an oversized header block and more streams than allowed end the offender's
    connection or stream, never the gateway: a well-behaved client is served throughout."""
    import h2.events
    import h2.errors
    demo = DemoUpstream(install)
    try:
        install.route_echo_to(f"http://127.0.0.1:{demo.port}")
        # the advertised bounds
        client = RawH2(install.port)
        client.pump(0.5)
        settings = client.conn.remote_settings
        expect(settings.max_concurrent_streams == 100, f"max concurrent streams advertised: {settings.max_concurrent_streams}")
        expect(settings.max_header_list_size == 16 * 1024, f"max header list size advertised: {settings.max_header_list_size}")
        client.close()

        # rapid reset (CVE-2023-44487): streams opened and cancelled at once, far beyond the limit
        client = RawH2(install.port)
        client.pump(0.2)
        for _ in range(400):
            stream = client.conn.get_next_available_stream_id()
            client.conn.send_headers(stream, request_headers(install))
            client.conn.reset_stream(stream, error_code=h2.errors.ErrorCodes.CANCEL)
            try:
                client.flush()
            except OSError:
                client.closed = True
                break
        events = client.pump(3)
        goaway = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
        expect(client.closed or goaway, "the resetting connection is closed")
        client.close()

        # a header block larger than the advertised list size
        client = RawH2(install.port)
        client.pump(0.2)
        stream = client.conn.get_next_available_stream_id()
        big = [(f"x-filler-{i}", "y" * 200) for i in range(120)]  # ~26 KiB decoded
        client.conn.send_headers(stream, request_headers(install, extra=big), end_stream=True)
        client.flush()
        events = client.pump(3)
        answered = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
        refused = [e for e in events if isinstance(e, (h2.events.StreamReset, h2.events.ConnectionTerminated))]
        expect(not answered and (refused or client.closed), f"an oversized header block is refused: {events}")
        client.close()

        # more concurrent streams than advertised, against an upstream that never answers so that
        # they stay open: the extra ones are refused
        silent = SilentUpstream()
        install.sql("UPDATE plans SET rate_per_second = 1000, burst = 1000")  # admitted, then waiting upstream
        install.route_echo_to(f"http://127.0.0.1:{silent.port}")
        client = RawH2(install.port)
        client.pump(0.3)
        client.conn.remote_settings.max_concurrent_streams = 1000  # pretend not to have heard the limit
        client.conn.remote_settings.acknowledge()
        def open_streams(count):
            for _ in range(count):
                stream = client.conn.get_next_available_stream_id()
                client.conn.send_headers(stream, request_headers(install), end_stream=True)
            client.flush()
            return client.pump(1.5)

        events = open_streams(100)
        expect(not client.closed and not any(isinstance(e, (h2.events.StreamReset, h2.events.ConnectionTerminated)) for e in events),
               f"100 streams waiting for the upstream are within bounds: {events[-3:]}")
        # NIOHTTP2 answers a peer that ignores the advertised limit with a connection error
        events = open_streams(10)
        ended = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
        expect(ended and ended[0].error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR, f"the 101st stream ends the connection: {events[-3:]}")
        client.close()

        # (still admitted by the raised plan, towards the silent upstream) a stream whose body never ends is answered 408 and reset when the body deadline passes
        client = RawH2(install.port)
        client.pump(0.2)
        stream = client.conn.get_next_available_stream_id()
        client.conn.send_headers(stream, request_headers(install, path="/t/demo/echo/v1/upload"), end_stream=False)
        client.flush()
        events = client.pump(6)
        statuses = [dict(e.headers).get(":status") for e in events if isinstance(e, h2.events.ResponseReceived)]
        expect(statuses == ["408"], f"a body that never ends is 408 after the deadline: {statuses} {events[-3:]}")
        client.close()

        silent.close()
        install.sql("UPDATE plans SET rate_per_second = 5, burst = 5 WHERE name = 'Free'")
        install.route_echo_to(f"http://127.0.0.1:{demo.port}")

        # and a well-behaved client is still served
        out, err = curl("--http2-prior-knowledge", "-H", f"X-API-Key: {install.api_key}", "-o", "/dev/null", "-w", "%{http_code}",
                        f"http://127.0.0.1:{install.port}/t/demo/echo/v1/hello")
        expect(out == "200", f"served after the abuse: {out!r} {err}")
    finally:
        demo.close()


class GRPCServer:
    """A grpcio server (h2c) with one service of raw-bytes methods, one per call kind."""

    def __init__(self):
        import grpc
        from concurrent import futures

        def unary(request, context):
            if request == b"missing":
                context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
            if request == b"slow":
                time.sleep(2)
            context.set_trailing_metadata((("x-served-by", "peers"),))
            return b"echo:" + request

        def server_stream(request, context):
            for i in range(5):
                yield b"%s-%d" % (request, i)

        def client_stream(requests, context):
            return b"%d" % sum(len(r) for r in requests)

        def bidi(requests, context):
            for r in requests:
                yield r.upper()

        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        }
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("peers.Echo", handlers),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def close(self):
        self.server.stop(0)


def grpc_relay_survives_clients_dropping_calls(install):
    """Clients that drop their connection with ninety gRPC calls in flight: the gateway resets the
    calls' upstream streams, ignores the upstream's answers that were already on their way, and the
    next call through the same upstream connection works. (NIOHTTP2 remembers 32 reset streams by
    default and ends the connection on frames of any other closed stream; the pooled connection then
    hung every later call.)"""
    import grpc
    upstream = GRPCServer()
    try:
        install.sql("UPDATE plans SET rate_per_second = 1000, burst = 1000")
        install.route_echo_to(f"grpc://127.0.0.1:{upstream.port}")
        channel = grpc.insecure_channel(f"127.0.0.1:{install.port}")
        key = (("x-api-key", install.api_key),)
        path = "/t/demo/echo/v1/peers.Echo/Unary"
        unary = channel.unary_unary(path)
        deadline = time.time() + 5
        while True:  # the first call of a subscription may wait for this gateway's quota lease
            try:
                unary(b"first", metadata=key, timeout=10)
                break
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or time.time() > deadline:
                    raise
                time.sleep(0.2)
        for round in range(3):
            raw = RawH2(install.port)
            for _ in range(90):
                stream = raw.conn.get_next_available_stream_id()
                raw.conn.send_headers(stream, [(":method", "POST"), (":scheme", "http"), (":authority", f"127.0.0.1:{install.port}"),
                                               (":path", path), ("content-type", "application/grpc"), ("te", "trailers"),
                                               ("x-api-key", install.api_key)])
                raw.conn.send_data(stream, b"\x00\x00\x00\x00\x05hello", end_stream=True)
            raw.flush()
            raw.close()  # gone with every call in flight
            time.sleep(0.5)
            try:
                reply = unary(b"after", metadata=key, timeout=5)
            except grpc.RpcError as error:
                reply = f"{error.code()} {error.details()}"
            expect(reply == b"echo:after", f"a call after round {round + 1} of dropped calls: {reply!r}")
        channel.close()
    finally:
        install.sql("UPDATE plans SET rate_per_second = 5, burst = 5 WHERE name = 'Free'")
        upstream.close()


def grpc_pass_through(install):
    """A stock gRPC client reaches a stock gRPC server through the gateway (grpc:// target):
    every call kind, trailers, upstream errors and the gateway's own refusals as gRPC statuses."""
    import grpc
    upstream = GRPCServer()
    try:
        install.sql("UPDATE plans SET rate_per_second = 1000, burst = 1000")
        install.route_echo_to(f"grpc://127.0.0.1:{upstream.port}")
        channel = grpc.insecure_channel(f"127.0.0.1:{install.port}")
        key = (("x-api-key", install.api_key),)
        prefix = "/t/demo/echo/v1/peers.Echo/"

        unary = channel.unary_unary(prefix + "Unary")
        deadline = time.time() + 5
        while True:  # the first call of a subscription may wait for this gateway's quota lease ("retry shortly")
            try:
                reply, call = unary.with_call(b"hello", metadata=key, timeout=10)
                break
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or time.time() > deadline:
                    raise
                time.sleep(0.2)
        expect(reply == b"echo:hello", f"unary through the gateway: {reply!r}")
        initial = dict(call.initial_metadata())
        trailing = dict(call.trailing_metadata())
        expect(initial.get("x-request-id") and "ratelimit-policy" in initial, f"the gateway's headers on the response: {initial}")
        expect(trailing.get("x-served-by") == "peers", f"the upstream's trailers arrive: {trailing}")

        streamed = list(channel.unary_stream(prefix + "ServerStream")(b"n", metadata=key, timeout=10))
        expect(streamed == [b"n-%d" % i for i in range(5)], f"server streaming: {streamed}")
        total = channel.stream_unary(prefix + "ClientStream")(iter([b"ab", b"cde", b"f"]), metadata=key, timeout=10)
        expect(total == b"6", f"client streaming: {total!r}")
        echoed = list(channel.stream_stream(prefix + "Bidi")(iter([b"x", b"yz"]), metadata=key, timeout=10))
        expect(echoed == [b"X", b"YZ"], f"bidirectional streaming: {echoed}")

        def status_of(method, request, metadata, timeout=10):
            try:
                channel.unary_unary(prefix + method)(request, metadata=metadata, timeout=timeout)
                return grpc.StatusCode.OK, ""
            except grpc.RpcError as error:
                return error.code(), error.details()

        code, details = status_of("Unary", b"missing", key)
        expect(code == grpc.StatusCode.NOT_FOUND and details == "no such thing", f"the upstream's status passes: {code} {details}")
        code, details = status_of("Unary", b"hello", ())
        expect(code == grpc.StatusCode.UNAUTHENTICATED, f"no credential: {code} {details}")
        code, details = status_of("Unary", b"slow", key, timeout=0.5)
        expect(code == grpc.StatusCode.DEADLINE_EXCEEDED, f"deadline: {code} {details}")

        install.wait_written()
        statuses = install.sql(
            "SELECT status FROM usage_events WHERE method = 'POST' ORDER BY at DESC, id DESC LIMIT 7").split()
        expect("404" in statuses and statuses.count("200") >= 4, f"gRPC statuses metered as HTTP equivalents: {statuses}")
        out, _ = curl("-H", f"X-API-Key: {install.api_key}", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                      f"http://127.0.0.1:{install.port}{prefix}Unary")
        expect(out == "505", f"HTTP/1.1 to a gRPC API without a descriptor set is refused: {out}")
        channel.close()
    finally:
        install.sql("UPDATE plans SET rate_per_second = 5, burst = 5 WHERE name = 'Free'")
        upstream.close()


def grpc_demo_greeter(install):
    """The seeded gRPC API: a stock client calls demo.Greeter/SayHello through the gateway."""
    import grpc
    demo = DemoUpstream(install)
    try:
        install.route_echo_to(f"grpc://127.0.0.1:{demo.grpc_port}", slug="greeter")
        channel = grpc.insecure_channel(f"127.0.0.1:{install.port}")
        say_hello = channel.unary_unary("/t/demo/greeter/v1/demo.Greeter/SayHello")
        request = b"\x0a\x05peers"  # HelloRequest { name: "peers" }
        deadline = time.time() + 5
        while True:  # the subscription's first call may wait for this gateway's quota lease
            try:
                reply = say_hello(request, metadata=(("x-api-key", install.api_key),), timeout=10)
                break
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or time.time() > deadline:
                    raise
                time.sleep(0.2)
        expect(reply == b"\x0a\x0dHello, peers!", f"HelloReply through the gateway: {reply!r}")
        try:
            channel.unary_unary("/t/demo/greeter/v1/demo.Greeter/Missing")(b"", metadata=(("x-api-key", install.api_key),), timeout=10)
            expect(False, "an unknown method is refused")
        except grpc.RpcError as error:
            expect(error.code() == grpc.StatusCode.UNIMPLEMENTED, f"unknown method: {error.code()}")
        channel.close()
    finally:
        demo.close()


class KitchenServer:
    """A grpcio server of tollgate.test.Kitchen (scripts/proto/tollgate/test/kitchen.proto) whose
    message classes come from the committed descriptor set by python protobuf (no generated code):
    Echo answers its request, Get looks an Inner up (id 404: NOT_FOUND) with header metadata
    x-kitchen and trailer metadata trace-bin, Count streams `id` Inners with trailer metadata
    x-count, Upload counts a client stream and joins its labels, Chat answers each message with its
    label upper-cased.
    `garbage`: Get answers bytes that are no Inner (a truncated varint), as a broken server would."""

    def __init__(self, garbage=False):
        import grpc
        from concurrent import futures
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
        path = os.path.join(ROOT, "Tests", "GatewayTests", "TranscodingVectors", "kitchen.binpb")
        with open(path, "rb") as f:
            self.descriptor_set = f.read()
        fds = descriptor_pb2.FileDescriptorSet.FromString(self.descriptor_set)
        pool = descriptor_pool.DescriptorPool()
        for fd in fds.file:
            pool.Add(fd)
        self.pool = pool
        self.Everything = message_factory.GetMessageClass(pool.FindMessageTypeByName("tollgate.test.Everything"))
        Inner = self.Inner = message_factory.GetMessageClass(pool.FindMessageTypeByName("tollgate.test.Inner"))

        self.seen = {}

        def get(request, context):
            # what the call carried, for the metadata and deadline case to look at
            self.seen = {"metadata": dict(context.invocation_metadata()), "remaining": context.time_remaining()}
            context.send_initial_metadata((("x-kitchen", "hot"),))
            context.set_trailing_metadata((("trace-bin", b"\x00\x01"),))
            if request.label == "slow":
                time.sleep(2)
            if request.id == 404:
                context.abort(grpc.StatusCode.NOT_FOUND, "no such inner: 404")
            return Inner(id=request.id, label=request.label or f"inner {request.id}")

        def upload(requests, context):
            labels = [r.label for r in requests]
            return Inner(id=len(labels), label=",".join(labels))

        def count(request, context):
            context.set_trailing_metadata((("x-count", str(request.id)),))
            for i in range(request.id):
                yield Inner(id=i, label=request.label)
            if request.label == "fail":
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, "stopped after the messages")

        handlers = {
            "Echo": grpc.unary_unary_rpc_method_handler(lambda request, context: request, self.Everything.FromString, self.Everything.SerializeToString),
            "Get": grpc.unary_unary_rpc_method_handler(get, Inner.FromString, Inner.SerializeToString),
            "Count": grpc.unary_stream_rpc_method_handler(count, Inner.FromString, Inner.SerializeToString),
            "Upload": grpc.stream_unary_rpc_method_handler(upload, Inner.FromString, Inner.SerializeToString),
            "Chat": grpc.stream_stream_rpc_method_handler(
                lambda requests, context: (Inner(id=r.id, label=r.label.upper()) for r in requests), Inner.FromString, Inner.SerializeToString),
        }
        if garbage:  # no serializers: the handler's bytes go out as they are
            handlers["Get"] = grpc.unary_unary_rpc_method_handler(lambda request, context: b"\x08\xff\xff")
            stranger = self.Everything()
            stranger.item.type_url = "type.googleapis.com/nope.Missing"
            stranger.item.value = b"\x08\x01"
            handlers["Echo"] = grpc.unary_unary_rpc_method_handler(lambda request, context: stranger.SerializeToString())
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("tollgate.test.Kitchen", handlers),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def close(self):
        self.server.stop(0)


def json_call(install, method, path, body=None, http2=False, headers=()):
    """curl as a plain JSON client: (status, content type, body)."""
    args = ["-X", method, "-H", f"X-API-Key: {install.api_key}", "-w", "\n%{http_code} %{content_type}"]
    if http2:
        args.append("--http2-prior-knowledge")
    for header in headers:
        args += ["-H", header]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
    out, err = curl(*args, f"http://127.0.0.1:{install.port}{path}", data=body)
    text, _, tail = out.rpartition("\n")
    status, _, content_type = tail.partition(" ")
    expect(status.isdigit(), f"curl answered: {out!r} {err}")
    return int(status), content_type, text


def install_kitchen(install, upstream):
    """The Echo API becomes the Kitchen service's, with its descriptor set, at `upstream`."""
    install.sql("UPDATE plans SET rate_per_second = 1000, burst = 1000")
    install.sql(
        "INSERT INTO api_descriptor_sets (tenant_id, api_id, content, sha256, services, method_count) "
        f"SELECT tenant_id, id, decode('{upstream.descriptor_set.hex()}', 'hex'), '{'0' * 64}', ARRAY['tollgate.test.Kitchen'], 4 "
        "FROM apis WHERE slug = 'echo' ON CONFLICT (tenant_id, api_id) DO UPDATE SET content = EXCLUDED.content")
    install.route_echo_to(f"grpc://127.0.0.1:{upstream.port}")


def uninstall_kitchen(install, upstream):
    install.sql("DELETE FROM api_descriptor_sets WHERE api_id IN (SELECT id FROM apis WHERE slug = 'echo')")
    install.sql("UPDATE plans SET rate_per_second = 5, burst = 5 WHERE name = 'Free'")
    upstream.close()


def http_call(install, method, path, body=None, headers=None):
    """python http.client as a plain JSON client: (status, headers by lowercase name, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", install.port, timeout=15)
    sent = {"X-API-Key": install.api_key, "Content-Type": "application/json"}
    sent.update(headers or {})
    deadline = time.time() + 5
    while True:  # the subscription's first call may wait for this gateway's quota lease
        connection.request(method, path, body=body, headers=sent)
        response = connection.getresponse()
        answer = response.read().decode()
        if response.status != 429 or time.time() > deadline:
            break
        time.sleep(0.2)
    connection.close()
    return response.status, {name.lower(): value for name, value in response.getheaders()}, answer


def json_to_grpc_metadata_and_deadline(install):
    """A JSON client's headers reach a grpcio upstream as metadata by grpc-gateway's rule (never its
    credentials), the upstream's metadata come back as Grpc-Metadata-* headers, and Grpc-Timeout is
    the call's deadline: sent upstream (bounded by the gateway's response timeout), a 504 problem
    when it passes, metered as DEADLINE_EXCEEDED's 504."""
    import base64
    upstream = KitchenServer()
    try:
        install_kitchen(install, upstream)
        base = "/t/demo/echo/v1"
        status, headers, body = http_call(install, "GET", f"{base}/v1/inners/7", headers={
            "Grpc-Metadata-Tenant-Region": "eu", "Grpc-Metadata-Trace-Bin": "AAEC/w==", "Accept-Language": "fr", "X-Custom": "not metadata",
            "Grpc-Timeout": "5S", "Cookie": "session=secret"})
        expect(status == 200 and json.loads(body) == {"id": 7, "label": "inner 7"}, f"the call: {status} {body}")
        seen = upstream.seen["metadata"]
        expect(seen.get("tenant-region") == "eu" and seen.get("trace-bin") == b"\x00\x01\x02\xff" and seen.get("grpcgateway-accept-language") == "fr",
               f"Grpc-Metadata-* and permanent headers are metadata: {seen}")
        expect(not any(key in seen for key in ("x-custom", "x-api-key", "authorization", "cookie", "grpcgateway-cookie")),
               f"other headers and credentials are not: {seen}")
        expect(0 < upstream.seen["remaining"] <= 5, f"Grpc-Timeout reaches the upstream: {upstream.seen['remaining']}")
        trace = headers.get("grpc-metadata-trace-bin", "")
        expect(headers.get("grpc-metadata-x-kitchen") == "hot" and base64.b64decode(trace + "=" * (-len(trace) % 4)) == b"\x00\x01",
               f"the upstream's header and trailer metadata come back: {headers}")
        # the gateway's own bound: a longer client deadline is cut to the response timeout (30 s)
        http_call(install, "GET", f"{base}/v1/inners/8", headers={"Grpc-Timeout": "1H"})
        expect(0 < upstream.seen["remaining"] <= 30, f"bounded by the response timeout: {upstream.seen['remaining']}")
        # what cannot be metadata, and a malformed deadline, are the client's errors
        status, headers, body = http_call(install, "GET", f"{base}/v1/inners/9", headers={"Grpc-Metadata-Authorization": "Bearer x"})
        expect(status == 400 and headers.get("content-type", "").startswith("application/problem+json") and "Grpc-Metadata-Authorization" in body,
               f"a credential as metadata: {status} {body}")
        status, _, body = http_call(install, "GET", f"{base}/v1/inners/9", headers={"Grpc-Timeout": "soon"})
        expect(status == 400 and "Grpc-Timeout" in json.loads(body).get("title", ""), f"a malformed deadline: {status} {body}")
        # a deadline that passes: 504 problem+json, metered as DEADLINE_EXCEEDED is
        status, headers, body = http_call(install, "GET", f"{base}/v1/inners/10?label=slow", headers={"Grpc-Timeout": "300m"})
        expect(status == 504 and headers.get("content-type", "").startswith("application/problem+json"), f"deadline passed: {status} {headers} {body}")
        install.wait_written()
        metered, _, _, _ = last_event(install)
        expect(metered == 504, f"metered as DEADLINE_EXCEEDED: {metered}")
    finally:
        uninstall_kitchen(install, upstream)


def json_to_grpc_transformations(install):
    """The provider's request_transform and response_transform act on a translated call's headers:
    a header the request transformation sets reaches the grpcio upstream as metadata, and the
    response transformation edits the Grpc-Metadata-* headers the JSON client gets; of its operations
    only a removal acts on the trailer section of a client that sends TE: trailers."""
    upstream = KitchenServer()
    # positions after the demo's own policies (the seed gives the Echo API some)
    policies = [(90, "request_transform", "pre_forward", '{"headers": {"set": {"X-Env": "prod"}}}'),
                (91, "response_transform", "response", '{"headers": {"remove": ["Grpc-Metadata-X-Kitchen", "Grpc-Trailer-Trace-Bin"], "set": {"X-Served": "tollgate"}}}')]
    try:
        for position, kind, phase, config in policies:
            install.sql("INSERT INTO api_policies (tenant_id, api_id, position, kind, phase, config) "
                        f"SELECT tenant_id, id, {position}, '{kind}', '{phase}', '{config}'::jsonb FROM apis WHERE slug = 'echo'")
        install_kitchen(install, upstream)
        status, headers, body = http_call(install, "GET", "/t/demo/echo/v1/v1/inners/7")
        expect(status == 200 and json.loads(body) == {"id": 7, "label": "inner 7"}, f"the call: {status} {body}")
        expect(upstream.seen["metadata"].get("x-env") == "prod", f"a header the request transformation sets is metadata: {upstream.seen}")
        expect("grpc-metadata-x-kitchen" not in headers and headers.get("x-served") == "tollgate" and "grpc-metadata-trace-bin" in headers,
               f"the response transformation edits the answer's headers: {headers}")
        # the removal of Grpc-Trailer-Trace-Bin leaves the trailer section empty: no Trailer, no chunking
        status, fields, raw = raw_http1(install, "GET", "/t/demo/echo/v1/v1/inners/7", headers=("TE: trailers",))
        expect(status == 200 and "trailer" not in fields and "content-length" in fields and "Grpc-Trailer" not in raw
               and fields.get("x-served") == ["tollgate"], f"a removed trailer: {status} {fields} {raw!r}")
    finally:
        install.sql("DELETE FROM api_policies WHERE position IN (90, 91) AND api_id IN (SELECT id FROM apis WHERE slug = 'echo')")
        uninstall_kitchen(install, upstream)


def json_to_grpc_undecodable_reply(install):
    """A grpcio upstream that answers OK with bytes that are not the method's output type: the JSON
    client gets a 502 problem, and the call is metered as that 502 (forwarded, not billable), not
    as the upstream's OK."""
    upstream = KitchenServer(garbage=True)
    try:
        install_kitchen(install, upstream)
        status, headers, body = http_call(install, "POST", "/t/demo/echo/v1/tollgate.test.Kitchen/Get", body='{"id": 1}')
        expect(status == 502 and headers.get("content-type", "").startswith("application/problem+json") and "tollgate.test.Inner" in body,
               f"an undecodable reply: {status} {headers} {body}")
        install.wait_written()
        row = install.sql("SELECT status, forwarded, billable FROM usage_events ORDER BY at DESC, id DESC LIMIT 1")
        expect(row == "502|t|f", f"metered as what the client got: {row}")
        # an Any whose type the API's descriptor set lacks cannot be written as JSON: the same 502
        status, headers, body = http_call(install, "POST", "/t/demo/echo/v1/tollgate.test.Kitchen/Echo", body="{}")
        expect(status == 502 and "nope.Missing" in json.loads(body).get("detail", ""), f"an Any of an unknown type in the reply: {status} {body}")
        install.wait_written()
        row = install.sql("SELECT status, forwarded, billable FROM usage_events ORDER BY at DESC, id DESC LIMIT 1")
        expect(row == "502|t|f", f"metered as the 502 it was: {row}")
    finally:
        uninstall_kitchen(install, upstream)


def json_to_grpc_any(install):
    """google.protobuf.Any in the JSON mapping, resolved against the API's descriptor set: a message
    and a well-known type packed by a JSON client reach a grpcio upstream and come back as python
    protobuf writes them; a type URL the set does not declare is the client's 400 with its pointer."""
    from google.protobuf import json_format
    upstream = KitchenServer()
    try:
        install_kitchen(install, upstream)
        path = "/t/demo/echo/v1/tollgate.test.Kitchen/Echo"
        message = {"item": {"@type": "type.googleapis.com/tollgate.test.Inner", "id": 5, "label": "five"},
                   "items": [{"@type": "type.googleapis.com/google.protobuf.Duration", "value": "1.5s"},
                             {"@type": "type.googleapis.com/google.protobuf.Struct", "value": {"k": [True]}}, {}]}
        status, _, body = http_call(install, "POST", path, body=json.dumps(message))
        stock = json.loads(json_format.MessageToJson(json_format.Parse(json.dumps(message), upstream.Everything(), descriptor_pool=upstream.pool),
                                                     indent=None, descriptor_pool=upstream.pool))
        expect(status == 200 and json.loads(body) == stock, f"Any both ways, as python protobuf: {status} {body} != {stock}")
        status, headers, body = http_call(install, "POST", path, body='{"items": [{}, {"@type": "type.googleapis.com/nope.Missing"}]}')
        problem = json.loads(body)
        expect(status == 400 and headers.get("content-type", "").startswith("application/problem+json")
               and problem.get("errors", [{}])[0].get("pointer") == "/items/1/@type", f"an unknown type URL: {status} {body}")
    finally:
        uninstall_kitchen(install, upstream)


def json_to_grpc_client_streams(install):
    """Client- and bidirectional-streaming methods over NDJSON (Content-Type: application/x-ndjson):
    each line one message of the client stream (CRLF and blank lines tolerated, an empty body an
    empty stream), sent upstream as it arrives — a bidirectional call's first answer line comes
    back before the client sends its second line —, bad lines and too many messages refused."""
    import socket
    upstream = KitchenServer()
    try:
        install_kitchen(install, upstream)
        base = "/t/demo/echo/v1/tollgate.test.Kitchen"
        ndjson = {"Content-Type": "application/x-ndjson"}
        status, _, body = http_call(install, "POST", f"{base}/Upload", body='{"label": "a"}\r\n\n{"id": 9, "label": "b"}\n{"label":"c"}', headers=ndjson)
        expect(status == 200 and json.loads(body) == {"id": 3, "label": "a,b,c"}, f"a client stream of three lines: {status} {body}")
        status, _, body = http_call(install, "POST", f"{base}/Upload", body="", headers=ndjson)
        expect(status == 200 and json.loads(body) == {}, f"an empty body is an empty stream: {status} {body}")
        status, _, body = json_call(install, "POST", f"{base}/Upload", '{"label": "a"}\n{"label": "b"}\n', http2=True, headers=("Content-Type: application/x-ndjson",))
        expect(status == 200 and json.loads(body) == {"id": 2, "label": "a,b"}, f"a client stream over h2c: {status} {body}")
        status, headers, body = http_call(install, "POST", f"{base}/Upload", body='{"label": "a"}\n{"nope": 1}\n{"label": "c"}\n', headers=ndjson)
        error = json.loads(body).get("errors", [{}])[0]
        expect(status == 400 and error.get("pointer") == "/nope" and error.get("line") == 2, f"a bad line is located: {status} {body}")
        status, _, body = http_call(install, "POST", f"{base}/Upload", body="{}\n" * 10_001, headers=ndjson)
        expect(status == 413, f"at most 10,000 messages: {status} {body}")
        # bidirectional, over one raw HTTP/1.1 connection with a chunked body: the answer to the
        # first line is read before the second line is sent (a gateway that waited for the whole
        # body would never answer, and the read would time out)
        connection = socket.create_connection(("127.0.0.1", install.port), timeout=10)
        connection.sendall((f"POST {base}/Chat HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {install.api_key}\r\n"
                            "Content-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n").encode())

        def chunk(text):
            connection.sendall(b"%x\r\n%s\r\n" % (len(text), text.encode()))

        received = b""

        def read_until(marker):
            nonlocal received
            while marker not in received:
                data = connection.recv(65536)
                expect(data, f"the connection closed early: {received!r}")
                received += data

        chunk('{"id": 1, "label": "first"}\n')
        read_until(b"FIRST")
        chunk('{"id": 2, "label": "second"}\n')
        read_until(b"SECOND")
        connection.sendall(b"0\r\n\r\n")
        read_until(b"\r\n0\r\n\r\n")
        connection.close()
        head, _, rest = received.partition(b"\r\n\r\n")
        expect(head.startswith(b"HTTP/1.1 200") and b"application/x-ndjson" in head.lower(), f"bidirectional head: {head!r}")
        lines = [json.loads(line) for line in rest.split(b"\r\n") if line.startswith(b"{")]
        expect(lines == [{"id": 1, "label": "FIRST"}, {"id": 2, "label": "SECOND"}], f"bidirectional lines: {rest!r}")
        # a bidirectional call whose body stops coming is cut at the body timeout (3 s here): the
        # connection closes mid-answer — no 408 head written into it — and the call is metered 408
        connection = socket.create_connection(("127.0.0.1", install.port), timeout=20)
        connection.sendall((f"POST {base}/Chat HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {install.api_key}\r\n"
                            "Content-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n").encode())
        received = b""
        chunk('{"label": "only"}\n')
        read_until(b"ONLY")
        while data := connection.recv(65536):
            received += data
        connection.close()
        expect(received.count(b"HTTP/1.1 ") == 1 and b"Request timeout" not in received, f"cut, not answered twice: {received!r}")
        install.wait_written()
        metered, _, _, _ = last_event(install)
        expect(metered == 408, f"metered as the timeout it was: {metered}")
    finally:
        uninstall_kitchen(install, upstream)


def h2_call(install, method, path, headers=(), body=b"", seconds=10):
    """One request over a fresh h2c connection (the `h2` library, prior knowledge): (response
    headers, body, trailers) as the client saw them; trailers None when the stream ended without."""
    import h2.events
    client = RawH2(install.port)
    try:
        stream = client.conn.get_next_available_stream_id()
        client.conn.send_headers(stream, [(":method", method), (":path", path), (":scheme", "http"), (":authority", "127.0.0.1"),
                                          ("x-api-key", install.api_key), *headers], end_stream=not body)
        if body:
            client.conn.send_data(stream, body, end_stream=True)
        client.flush()
        response, data, trailers = None, b"", None
        deadline = time.time() + seconds
        while time.time() < deadline and not client.closed:
            for event in client.pump(0.2):
                if isinstance(event, h2.events.ResponseReceived):
                    response = dict(event.headers)
                elif isinstance(event, h2.events.DataReceived):
                    data += event.data
                    client.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.TrailersReceived):
                    trailers = list(event.headers)
                elif isinstance(event, h2.events.StreamEnded):
                    return response, data.decode(), trailers
            client.events = []
            client.flush()
        raise AssertionError(f"the stream did not end: {response} {data!r}")
    finally:
        client.close()


def raw_http1(install, method, path, headers=(), body=None):
    """curl --http1.1 --raw -i: the head and the body as they crossed the wire (chunk framing and
    trailer section included); (head lines by lowercase name, raw body)."""
    args = ["--http1.1", "--raw", "-i", "-X", method, "-H", f"X-API-Key: {install.api_key}"]
    for header in headers:
        args += ["-H", header]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
    # bytes, not text: text mode would turn the CRLFs under test into newlines
    result = subprocess.run(["curl", "-sS", "--max-time", "10", *args, f"http://127.0.0.1:{install.port}{path}"], capture_output=True,
                            input=(body or "").encode())
    out, err = result.stdout.decode(), result.stderr.decode()
    head, _, rest = out.partition("\r\n\r\n")
    lines = head.split("\r\n")
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields.setdefault(name.strip().lower(), []).append(value.strip())
    expect(lines[0].startswith("HTTP/1.1 "), f"curl answered: {out!r} {err}")
    return int(lines[0].split()[1]), fields, rest


def json_to_grpc_trailer_metadata(install):
    """The upstream's trailer metadata (grpcio's set_trailing_metadata) reach a JSON client that
    says TE: trailers as Grpc-Trailer-* HTTP trailers: the last chunk's trailer section on HTTP/1.1
    (curl --raw; a unary answer is then chunked and announces them in Trailer), a trailing HEADERS
    frame on HTTP/2 (h2); for unary answers, server streams (after their last line, an error line
    included) and problems. Header metadata stay Grpc-Metadata-* headers, and a client without
    TE: trailers keeps getting a unary call's trailer metadata as headers."""
    import base64
    upstream = KitchenServer()
    te = "TE: trailers"
    try:
        install_kitchen(install, upstream)
        base = "/t/demo/echo/v1"
        status, headers, _ = http_call(install, "GET", f"{base}/v1/inners/7")  # also waits for the quota lease
        expect(status == 200 and "grpc-metadata-trace-bin" in headers and "trailer" not in headers and "content-length" in headers,
               f"no TE: trailers, trailer metadata as headers as before: {status} {headers}")
        # HTTP/1.1 unary: chunked, announced, the trailer section after the last chunk
        status, fields, raw = raw_http1(install, "GET", f"{base}/v1/inners/7", headers=(te,))
        expect(status == 200 and fields.get("transfer-encoding") == ["chunked"] and "content-length" not in fields
               and fields.get("trailer") == ["Grpc-Trailer-trace-bin"] and fields.get("grpc-metadata-x-kitchen") == ["hot"]
               and "grpc-metadata-trace-bin" not in fields, f"unary head with TE: trailers: {status} {fields}")
        body, _, section = raw.rpartition("\r\n0\r\n")
        trailer_lines = [line for line in section.split("\r\n") if line]
        expect(len(trailer_lines) == 1 and trailer_lines[0].startswith("Grpc-Trailer-trace-bin: ")
               and base64.b64decode(trailer_lines[0].split(": ")[1] + "==")[:2] == b"\x00\x01" and section.endswith("\r\n\r\n"),
               f"the trailer section: {raw!r}")
        expect(json.loads(body.split("\r\n", 1)[1]) == {"id": 7, "label": "inner 7"}, f"the chunked JSON body: {raw!r}")
        # the trailer section ends the answer exactly: a kept-alive connection (python http.client,
        # which reads and skips trailer sections) goes on with the next answers
        connection = http.client.HTTPConnection("127.0.0.1", install.port, timeout=10)
        answers = []
        for path, sent in [(f"{base}/v1/inners/1", None), (f"{base}/tollgate.test.Kitchen/Count", '{"id": 2}'), (f"{base}/v1/inners/404", None),
                           (f"{base}/v1/inners/2", None)]:
            connection.request("GET" if sent is None else "POST", path, body=sent,
                               headers={"X-API-Key": install.api_key, "Content-Type": "application/json", "TE": "trailers"})
            response = connection.getresponse()
            answers.append((response.status, response.getheader("Transfer-Encoding"), response.read().decode()))
        connection.close()
        expect([status for status, _, _ in answers] == [200, 200, 404, 200] and all(chunked == "chunked" for _, chunked, _ in answers)
               and json.loads(answers[3][2]) == {"id": 2, "label": "inner 2"}, f"keep-alive with trailer sections: {answers}")
        # HTTP/1.1 server stream: its lines, then the trailer section (unannounced: the head went first)
        status, fields, raw = raw_http1(install, "POST", f"{base}/tollgate.test.Kitchen/Count", headers=(te,), body='{"id": 2}')
        expect(status == 200 and "trailer" not in fields and raw.count('"id"') == 1 and raw.endswith("\r\n0\r\nGrpc-Trailer-x-count: 2\r\n\r\n"),
               f"a stream's trailers on HTTP/1.1: {status} {fields} {raw!r}")
        status, fields, raw = raw_http1(install, "POST", f"{base}/tollgate.test.Kitchen/Count", headers=(te,), body='{"id": 1, "label": "fail"}')
        expect(status == 200 and '"FAILED_PRECONDITION"' in raw and raw.endswith("\r\n0\r\nGrpc-Trailer-x-count: 1\r\n\r\n"),
               f"a failed stream's error line, then its trailers: {raw!r}")
        # a problem (NOT_FOUND, a trailers-only answer) carries its trailer metadata the same way
        status, fields, raw = raw_http1(install, "GET", f"{base}/v1/inners/404", headers=(te,))
        expect(status == 404 and fields.get("content-type") == ["application/problem+json"] and fields.get("trailer") == ["Grpc-Trailer-trace-bin"]
               and "\r\n0\r\nGrpc-Trailer-trace-bin: " in raw and '"grpc_status":5' in raw, f"a problem with trailers: {status} {fields} {raw!r}")
        # HTTP/2: a trailing HEADERS frame
        response, body, trailers = h2_call(install, "GET", f"{base}/v1/inners/8", headers=(("te", "trailers"),))
        expect(response.get(":status") == "200" and response.get("grpc-metadata-x-kitchen") == "hot" and response.get("trailer") == "Grpc-Trailer-trace-bin"
               and json.loads(body) == {"id": 8, "label": "inner 8"}, f"unary over h2: {response} {body}")
        expect(trailers is not None and [name for name, _ in trailers] == ["grpc-trailer-trace-bin"], f"unary trailers over h2: {trailers}")
        response, body, trailers = h2_call(install, "POST", f"{base}/tollgate.test.Kitchen/Count", headers=(("te", "trailers"), ("content-type", "application/json")),
                                           body=b'{"id": 3}')
        expect(response.get(":status") == "200" and len(body.splitlines()) == 3 and trailers == [("grpc-trailer-x-count", "3")],
               f"a stream's trailers over h2: {response} {body!r} {trailers}")
        # without TE: trailers an HTTP/2 client gets no trailer section, and the unary metadata as headers
        response, body, trailers = h2_call(install, "GET", f"{base}/v1/inners/9")
        expect(trailers is None and "grpc-metadata-trace-bin" in response, f"h2 without TE: trailers: {response} {trailers}")
    finally:
        uninstall_kitchen(install, upstream)


def json_to_grpc_client_stream_routes(install):
    """A client stream at its google.api.http route (post "/v1/uploads", body "*"), as at its gRPC
    path; a bidirectional method's binding with a path variable is not routed (404), its other
    binding is."""
    upstream = KitchenServer()
    try:
        install_kitchen(install, upstream)
        base = "/t/demo/echo/v1"
        ndjson = {"Content-Type": "application/x-ndjson"}
        status, _, body = http_call(install, "POST", f"{base}/v1/uploads", body='{"label": "a"}\r\n{"id": 9, "label": "b"}\n', headers=ndjson)
        expect(status == 200 and json.loads(body) == {"id": 2, "label": "a,b"}, f"a client stream at its route: {status} {body}")
        status, _, body = json_call(install, "POST", f"{base}/v1/uploads", '{"label": "x"}\n{"label": "y"}\n', http2=True,
                                    headers=("Content-Type: application/x-ndjson",))
        expect(status == 200 and json.loads(body) == {"id": 2, "label": "x,y"}, f"the same over h2c: {status} {body}")
        status, _, _ = http_call(install, "POST", f"{base}/v1/uploads", body='{"label": "a"}')
        expect(status == 415, f"the route takes NDJSON as the gRPC path does: {status}")
        status, _, body = http_call(install, "POST", f"{base}/v1/chat", body='{"label": "hi"}\n{"label": "yo"}\n', headers=ndjson)
        lines = [json.loads(line) for line in body.splitlines() if line]
        expect(status == 200 and lines == [{"label": "HI"}, {"label": "YO"}], f"a bidirectional stream at its route: {status} {body!r}")
        status, _, body = http_call(install, "POST", f"{base}/v1/chats/1", body='{"label": "hi"}\n', headers=ndjson)
        expect(status == 404, f"a stream's binding with a path variable is not routed: {status} {body}")
    finally:
        uninstall_kitchen(install, upstream)


def json_to_grpc_translation(install):
    """Plain HTTP/JSON clients (curl, HTTP/1.1 and h2c) call a stock gRPC server (grpcio) through an
    API with an uploaded descriptor set: the proto3 JSON mapping both ways (checked against python
    protobuf's own), google.api.http routes, server streaming as NDJSON, gRPC statuses as HTTP
    statuses with problem+json, and the same metering as any call."""
    from google.protobuf import json_format
    upstream = KitchenServer()
    try:
        install.sql("UPDATE plans SET rate_per_second = 1000, burst = 1000")
        install.sql(
            "INSERT INTO api_descriptor_sets (tenant_id, api_id, content, sha256, services, method_count) "
            f"SELECT tenant_id, id, decode('{upstream.descriptor_set.hex()}', 'hex'), '{'0' * 64}', ARRAY['tollgate.test.Kitchen'], 4 "
            "FROM apis WHERE slug = 'echo' ON CONFLICT (tenant_id, api_id) DO UPDATE SET content = EXCLUDED.content")
        install.route_echo_to(f"grpc://127.0.0.1:{upstream.port}")
        base = "/t/demo/echo/v1"
        message = {"fInt64": "-9007199254740993", "fUint64": "18446744073709551615", "fString": "h\u00e9llo", "fBytes": "AAEC/w==",
                   "color": "GREEN", "inner": {"id": 7, "label": "seven"}, "packedInts": [1, -1, 300], "counts": {"a": 1},
                   "choiceText": "t", "maybe": 0, "customName": "c", "at": "2024-02-29T12:00:00.5Z", "took": "-1.5s",
                   "wInt64": "5", "attrs": {"k": [1, "x", None, True]}, "mask": "fInt32,inner.label", "fDouble": "Infinity"}
        deadline = time.time() + 5
        while True:  # the subscription's first call may wait for this gateway's quota lease
            status, content_type, body = json_call(install, "POST", f"{base}/tollgate.test.Kitchen/Echo", json.dumps(message))
            if status != 429 or time.time() > deadline:
                break
            time.sleep(0.2)
        expect(status == 200 and content_type.startswith("application/json"), f"unary over HTTP/1.1: {status} {content_type} {body}")
        stock = json.loads(json_format.MessageToJson(json_format.Parse(json.dumps(message), upstream.Everything()), indent=None))
        expect(json.loads(body) == stock, f"the answer is python protobuf's JSON of the same message: {body} != {stock}")
        # the declared field names are accepted too, and HTTP/2 clients are translated the same way
        status, _, body = json_call(install, "POST", f"{base}/tollgate.test.Kitchen/Echo", '{"f_int32": 5, "json_named": "x"}', http2=True)
        expect(status == 200 and json.loads(body) == {"fInt32": 5, "customName": "x"}, f"h2c and declared names: {status} {body}")
        # google.api.http routes: path variables (percent-decoded) and query parameters fill the message
        status, _, body = json_call(install, "GET", f"{base}/v1/inners/42?label=from%20query")
        expect(status == 200 and json.loads(body) == {"id": 42, "label": "from query"}, f"GET route: {status} {body}")
        status, _, body = json_call(install, "GET", f"{base}/v1/labels/a%2Fb")
        expect(status == 200 and json.loads(body) == {"label": "a/b"}, f"GET route by label (id 0 is a default, left out): {status} {body}")
        # a gRPC status becomes its HTTP status, the message the problem's detail
        status, content_type, body = json_call(install, "GET", f"{base}/v1/inners/404")
        problem = json.loads(body)
        expect(status == 404 and content_type.startswith("application/problem+json") and problem.get("detail") == "no such inner: 404"
               and problem.get("grpc_status") == 5, f"NOT_FOUND: {status} {content_type} {body}")
        # server streaming as newline-delimited JSON, chunked on HTTP/1.1
        status, content_type, body = json_call(install, "POST", f"{base}/tollgate.test.Kitchen/Count", '{"id": 3, "label": "n"}')
        lines = [json.loads(line) for line in body.splitlines() if line]
        expect(status == 200 and content_type.startswith("application/x-ndjson") and lines == [{"label": "n"}, {"id": 1, "label": "n"}, {"id": 2, "label": "n"}],
               f"server streaming: {status} {content_type} {body!r}")
        status, _, body = json_call(install, "POST", f"{base}/tollgate.test.Kitchen/Count", '{"id": 2}', http2=True)
        expect(status == 200 and len(body.splitlines()) == 2, f"server streaming over h2c: {status} {body!r}")
        # a status that ends a stream after its messages is the stream's last line
        status, _, body = json_call(install, "POST", f"{base}/tollgate.test.Kitchen/Count", '{"id": 1, "label": "fail"}')
        lines = [json.loads(line) for line in body.splitlines() if line]
        expect(status == 200 and lines == [{"label": "fail"}, {"error": {"code": 9, "status": "FAILED_PRECONDITION", "message": "stopped after the messages"}}],
               f"a stream's failure: {status} {body!r}")
        # a client that waits for 100 Continue is invited to send its body
        out, err = curl("-v", "-X", "POST", "-H", f"X-API-Key: {install.api_key}", "-H", "Expect: 100-continue", "-H", "Content-Type: application/json",
                        "--data-binary", "@-", f"http://127.0.0.1:{install.port}{base}/tollgate.test.Kitchen/Echo",
                        data=json.dumps({"fString": "x" * 3000}))
        expect("< HTTP/1.1 100 Continue" in err and json.loads(out) == {"fString": "x" * 3000}, f"Expect: 100-continue: {err[-600:]}")
        # a chunked request body is read as its payload
        status, _, body = json_call(install, "POST", f"{base}/tollgate.test.Kitchen/Echo", '{"fString": "chunked"}', headers=("Transfer-Encoding: chunked",))
        expect(status == 200 and json.loads(body) == {"fString": "chunked"}, f"chunked request body: {status} {body}")
        # one kept-alive connection (python http.client): unary, a stream, a route, a problem, in turn
        connection = http.client.HTTPConnection("127.0.0.1", install.port, timeout=10)
        answers = []
        for method, path, sent in [("POST", f"{base}/tollgate.test.Kitchen/Echo", '{"fInt32": 1}'), ("POST", f"{base}/tollgate.test.Kitchen/Count", '{"id": 2}'),
                                   ("GET", f"{base}/v1/inners/5", None), ("GET", f"{base}/v1/inners/404", None), ("POST", f"{base}/tollgate.test.Kitchen/Echo", '{}')]:
            connection.request(method, path, body=sent, headers={"X-API-Key": install.api_key, "Content-Type": "application/json"})
            response = connection.getresponse()
            answers.append((response.status, response.read().decode()))
        connection.close()
        expect([status for status, _ in answers] == [200, 200, 200, 404, 200] and answers[1][1].count("\n") == 2 and answers[4][1] == "{}",
               f"keep-alive sequence: {answers}")
        # bad JSON is the client's error, located; unknown methods and client streams are not translated
        status, content_type, body = json_call(install, "POST", f"{base}/tollgate.test.Kitchen/Echo", '{"inner": {"nope": 1}}')
        problem = json.loads(body)
        expect(status == 400 and problem.get("errors", [{}])[0].get("pointer") == "/inner/nope", f"unknown field: {status} {body}")
        status, _, body = json_call(install, "POST", f"{base}/tollgate.test.Kitchen/Echo", '{"fInt32": 2147483648}')
        expect(status == 400 and "int32" in json.loads(body).get("detail", ""), f"out of range: {status} {body}")
        status, _, _ = json_call(install, "POST", f"{base}/tollgate.test.Kitchen/Echo", "{not json")
        expect(status == 400, f"malformed JSON: {status}")
        status, _, _ = json_call(install, "POST", f"{base}/tollgate.test.Kitchen/Upload", "{}")
        expect(status == 415, f"a client-streaming method takes NDJSON, not one JSON body: {status}")
        status, _, _ = json_call(install, "POST", f"{base}/tollgate.test.Kitchen/Missing", "{}")
        expect(status == 404, f"an unknown method: {status}")
        # no credential: the same gate as every call
        out, _ = curl("-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "--data-binary", "{}",
                      f"http://127.0.0.1:{install.port}{base}/tollgate.test.Kitchen/Echo")
        expect(out == "401", f"no credential: {out}")
        # a stock gRPC client still reaches the same API as before
        import grpc
        channel = grpc.insecure_channel(f"127.0.0.1:{install.port}")
        reply = channel.unary_unary(f"{base}/tollgate.test.Kitchen/Get", request_serializer=upstream.Inner.SerializeToString,
                                    response_deserializer=upstream.Inner.FromString)(upstream.Inner(id=9), metadata=(("x-api-key", install.api_key),), timeout=10)
        expect(reply.id == 9 and reply.label == "inner 9", f"gRPC beside JSON: {reply}")
        channel.close()
        install.wait_written()
        statuses = install.sql("SELECT status FROM usage_events WHERE forwarded ORDER BY at DESC, id DESC LIMIT 10").split()
        expect("404" in statuses and statuses.count("200") >= 5, f"translated calls metered with their gRPC status's HTTP equivalent: {statuses}")
        # an upstream that cannot be reached is a 502 problem for a JSON client
        install.route_echo_to(f"grpc://127.0.0.1:{free_port()}")
        status, content_type, body = json_call(install, "POST", f"{base}/tollgate.test.Kitchen/Echo", "{}")
        expect(status == 502 and content_type.startswith("application/problem+json"), f"upstream down: {status} {content_type} {body}")
    finally:
        install.sql("DELETE FROM api_descriptor_sets WHERE api_id IN (SELECT id FROM apis WHERE slug = 'echo')")
        install.sql("UPDATE plans SET rate_per_second = 5, burst = 5 WHERE name = 'Free'")
        upstream.close()


def json_to_grpc_demo_greeter(install):
    """The seeded Greeter with its seeded descriptor set: the README's curl call works."""
    demo = DemoUpstream(install)
    try:
        install.route_echo_to(f"grpc://127.0.0.1:{demo.grpc_port}", slug="greeter")
        deadline = time.time() + 5
        while True:
            status, content_type, body = json_call(install, "POST", "/t/demo/greeter/v1/demo.Greeter/SayHello", '{"name":"Ada"}')
            if status != 429 or time.time() > deadline:
                break
            time.sleep(0.2)
        expect(status == 200 and json.loads(body) == {"message": "Hello, Ada!"}, f"curl -d '{{\"name\":\"Ada\"}}': {status} {body}")
        status, _, body = json_call(install, "GET", "/t/demo/greeter/v1/v1/hello/Grace")
        expect(status == 200 and json.loads(body) == {"message": "Hello, Grace!"}, f"GET /v1/hello/Grace: {status} {body}")
    finally:
        demo.close()


CASES = [websocket_echo, websocket_refused_without_credential, websocket_over_tls_closed_when_idle, curl_over_tls, http2_with_curl, h2_upstream_with_curl,
         http2_abuse_is_bounded, websocket_over_http2, websocket_over_http2_closed_when_idle,
         websocket_over_http2_keeps_the_apis_own_idle_limit, websocket_over_http2_upstream_answers_as_it_answered,
         websocket_over_http2_refused_without_credential, websocket_to_an_h2_api, grpc_pass_through, grpc_relay_survives_clients_dropping_calls, grpc_demo_greeter, json_to_grpc_translation,
         json_to_grpc_metadata_and_deadline, json_to_grpc_undecodable_reply, json_to_grpc_any, json_to_grpc_client_streams,
         json_to_grpc_transformations, json_to_grpc_demo_greeter, json_to_grpc_trailer_metadata, json_to_grpc_client_stream_routes]


def main():
    wanted = set(sys.argv[1:])
    install = Installation()
    passed = failed = 0
    try:
        for case in CASES:
            if wanted and case.__name__ not in wanted:
                continue
            started = time.time()
            try:
                case(install)
                passed += 1
                print(f"ok   {case.__name__} ({time.time() - started:.1f} s)", flush=True)
            except Exception as error:  # a failed case is reported and the next one runs
                failed += 1
                where = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == __file__][-1]
                print(f"FAIL {case.__name__} (line {where.lineno}): {error!r}", flush=True)
    finally:
        install.close()
    print(f"peers: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

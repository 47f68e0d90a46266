#!/usr/bin/env python3
"""The meter's fault suite: the real binary, a real Postgres cluster of its own, a real client.

Each case starts from a fresh database with the demo marketplace, runs a gateway process (or
several sharing the database) under a bounded load (a few threads of keep-alive HTTP/1.1 clients, ~200 calls/s), does something bad to
Postgres or to the gateway, and ends by comparing the client's count of answered calls with the
events stored, and with `tollgate billing reconcile`, which must say "balanced" exactly when nothing
was lost and name the loss otherwise.

Run by scripts/faults.sh (which `make test` runs); prints one line per case and
"faults: N passed, M failed" at the end. Environment: TOLLGATE_BIN (the binary), ROOT.
"""
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

ROOT = os.environ.get("ROOT") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ["TOLLGATE_BIN"]
PGPORT = os.environ.get("FAULTS_PGPORT", "54335")
DATA = os.path.join(ROOT, ".data", "faults")
CLUSTER_ENV = dict(os.environ, PGPORT=PGPORT, TOLLGATE_DATA_DIR=DATA)
RATE_PER_WORKER = 50
WORKERS = 4
# kill -9 may lose what was answered since the last spool fsync: 50 ms plus the fsync, at the
# offered rate, plus calls answered while the process was being killed.
KILL_LOSS_BOUND = int(RATE_PER_WORKER * WORKERS * 0.15) + 10


def pg(*args, check=True):
    result = subprocess.run([os.path.join(ROOT, "scripts", "pg.sh"), *args], env=CLUSTER_ENV, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"pg.sh {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout.strip()


def pg_kill9():
    """Postgres crashes: the postmaster and every backend get SIGKILL."""
    with open(os.path.join(DATA, "postgres", "postmaster.pid")) as f:
        pid = int(f.readline())
    subprocess.run(["pkill", "-9", "-P", str(pid)])
    os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        try:
            os.kill(pid, 0)
            time.sleep(0.05)
        except ProcessLookupError:
            break


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Case:
    """One fresh database, an upstream, a gateway data dir."""

    def __init__(self, name):
        self.name = name
        self.db = "faults_" + name
        pg("start")
        pg("psql", "-d", "postgres", "-qc", f"DROP DATABASE IF EXISTS {self.db} WITH (FORCE)")
        pg("start", self.db)
        self.dir = os.path.join(DATA, "run-" + name)
        subprocess.run(["rm", "-rf", self.dir])
        os.makedirs(self.dir)
        self.gateway_port = free_port()
        self.upstream_port = free_port()
        self.env = dict(
            os.environ, DATABASE_URL=pg("url", self.db), TOLLGATE_DATA_DIR=self.dir, GATEWAY_ADDRESS=f"127.0.0.1:{self.gateway_port}",
            TOLLGATE_MIGRATIONS_DIR=os.path.join(ROOT, "migrations"), TOLLGATE_TEMPLATES_DIR=os.path.join(ROOT, "templates"), LOG_LEVEL=os.environ.get("FAULTS_LOG_LEVEL", "info"))
        seeded = subprocess.run([BIN, "seed-demo", "--json"], env=self.env, capture_output=True, text=True, check=True)
        self.api_key = json.loads(seeded.stdout)["api_key"]
        # the demo app's Free plan allows 5 calls/s: most of the load is answered 429 (metered, not billable)
        self.sql(f"UPDATE api_upstream_targets SET url = 'http://127.0.0.1:{self.upstream_port}'")
        self.upstream = subprocess.Popen([BIN, "demo-upstream", "--port", str(self.upstream_port)], env=self.env,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.gateway = None
        self.others = []  # more gateway processes sharing the database
        self.log = open(os.path.join(self.dir, "gateway.log"), "a")

    def sql(self, statement):
        return pg("psql", "-d", self.db, "-qAt", "-c", statement)

    def start_gateway(self, port=None, **extra):
        """Starts a gateway process (on the case's port unless `port` is given); returns it."""
        port = port or self.gateway_port
        process = subprocess.Popen([BIN, "gateway"], env=dict(self.env, GATEWAY_ADDRESS=f"127.0.0.1:{port}", **extra), stdout=self.log, stderr=self.log)
        if port == self.gateway_port:
            self.gateway = process
        else:
            self.others.append(process)
        deadline = time.time() + 40
        while time.time() < deadline:
            if (self.readyz(port) or {}).get("status") == "ready":  # its first snapshot is loaded
                return process
            time.sleep(0.1)
        raise RuntimeError("the gateway did not start")

    def readyz(self, port=None):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port or self.gateway_port, timeout=2)
            c.request("GET", "/readyz")
            response = c.getresponse()
            body = response.read()
            c.close()
            return json.loads(body) if response.status in (200, 503) else None
        except Exception:
            return None

    def stop_gateway(self, sig=signal.SIGTERM, wait=40):
        self.gateway.send_signal(sig)
        started = time.time()
        try:
            code = self.gateway.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            self.gateway.kill()
            self.gateway.wait()
            raise AssertionError(f"the gateway did not exit within {wait} s of {sig.name}")
        return code, time.time() - started

    def wait_written(self, timeout=60):
        """Until the gateway's meter has nothing left to write (and its tally was reported)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            ready = self.readyz()
            meter = (ready or {}).get("meter") or {}
            if meter.get("backlog_events") == 0 and meter.get("state") == "writing":
                time.sleep(2.5)  # the reporter writes the tally every second
                return
            time.sleep(0.2)
        raise AssertionError(f"the meter did not catch up: {self.readyz()}")

    def stored(self):
        return int(self.sql("SELECT count(*) FROM usage_events"))

    def reconcile(self):
        period = datetime.now(timezone.utc).strftime("%Y-%m")
        result = subprocess.run([BIN, "billing", "reconcile", "--tenant", "demo", "--period", period], env=self.env, capture_output=True, text=True)
        return result.returncode, result.stdout + result.stderr

    def close(self):
        for p in (self.gateway, self.upstream, *self.others):
            if p and p.poll() is None:
                p.kill()
                p.wait()
        self.log.close()


class Load:
    """Keep-alive clients at a bounded rate; counts every response read whole."""

    def __init__(self, ports, api_key):
        """`ports`: one gateway port, or several; the workers take them in turn."""
        self.ports = ports if isinstance(ports, list) else [ports]
        self.api_key = api_key
        self.answered = 0
        self.statuses = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(self.ports[i % len(self.ports)],), daemon=True) for i in range(WORKERS)]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=10)

    def run(self, port):
        connection = None
        interval = 1 / RATE_PER_WORKER
        next_at = time.time()
        while not self.stop.is_set():
            next_at += interval
            delay = next_at - time.time()
            if delay > 0:
                time.sleep(delay)
            try:
                if connection is None:
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                connection.request("GET", "/t/demo/echo/v1/hello", headers={"X-API-Key": self.api_key})
                response = connection.getresponse()
                response.read()
                with self.lock:
                    self.answered += 1
                    self.statuses[response.status] = self.statuses.get(response.status, 0) + 1
                if response.getheader("connection", "").lower() == "close":
                    connection.close()
                    connection = None
            except Exception:
                # refused, reset or closed: not answered, so not counted
                if connection is not None:
                    connection.close()
                connection = None
                time.sleep(0.05)


def expect(condition, message):
    if not condition:
        raise AssertionError(message)


def balanced(case, answered):
    code, text = case.reconcile()
    expect(code == 0 and text.startswith("balanced"), f"reconcile should balance: {text.strip()}")
    expect(f"{answered} calls answered" in text, f"reconcile should count {answered} calls: {text.strip()}")


# MARK: the cases

def postgres_stopped_15s_three_times(case):
    case.start_gateway()
    with Load(case.gateway_port, case.api_key) as load:
        time.sleep(3)
        for _ in range(3):
            pg("stop")
            time.sleep(15)
            spooling = (case.readyz() or {}).get("meter", {})
            expect(spooling.get("spool_events", 0) > 0, f"events should wait in the spool during the outage: {spooling}")
            expect("Postgres" in (spooling.get("last_error") or ""), f"readyz should name the cause: {spooling}")
            pg("start")
            time.sleep(4)
    case.wait_written()
    expect(case.stored() == load.answered, f"answered {load.answered}, stored {case.stored()}")
    balanced(case, load.answered)
    code, _ = case.stop_gateway()
    expect(code == 0, f"exit status {code}")
    return f"{load.answered} answered = stored, 3 outages of 15 s"


def postgres_killed(case):
    case.start_gateway()
    with Load(case.gateway_port, case.api_key) as load:
        time.sleep(3)
        pg_kill9()
        time.sleep(8)
        pg("start")
        time.sleep(4)
    case.wait_written()
    expect(case.stored() == load.answered, f"answered {load.answered}, stored {case.stored()}")
    balanced(case, load.answered)
    case.stop_gateway()
    return f"{load.answered} answered = stored"


def gateway_sigterm_postgres_up(case):
    case.start_gateway()
    with Load(case.gateway_port, case.api_key) as load:
        time.sleep(4)
        code, took = case.stop_gateway()
        time.sleep(0.5)
    expect(code == 0, f"exit status {code}")
    expect(case.stored() == load.answered, f"answered {load.answered} {load.statuses}, stored {case.stored()}: {case.sql('SELECT status, count(*) FROM usage_events GROUP BY 1')}")
    balanced(case, load.answered)
    return f"{load.answered} answered = stored, exited in {took:.1f} s"


def gateway_sigterm_postgres_down(case):
    case.start_gateway()
    with Load(case.gateway_port, case.api_key) as load:
        time.sleep(3)
        pg("stop")
        time.sleep(4)
        code, took = case.stop_gateway()
        time.sleep(0.5)
    expect(code == 0, f"exit status {code}")
    pg("start")
    case.start_gateway()  # the next run replays what the stopped one left in the spool
    case.wait_written()
    case.stop_gateway()
    expect(case.stored() == load.answered, f"answered {load.answered}, stored {case.stored()}")
    balanced(case, load.answered)
    return f"{load.answered} answered = stored, exited in {took:.1f} s with Postgres down"


def gateway_killed(case, postgres_down):
    case.start_gateway()
    with Load(case.gateway_port, case.api_key) as load:
        time.sleep(3)
        if postgres_down:
            pg("stop")
            time.sleep(5)
        case.gateway.kill()
        case.gateway.wait()
        time.sleep(0.5)
    if postgres_down:
        pg("start")
    case.start_gateway()
    case.wait_written()
    case.stop_gateway()
    lost = load.answered - case.stored()
    expect(0 <= lost <= KILL_LOSS_BOUND, f"answered {load.answered}, stored {case.stored()}: lost {lost}, bound {KILL_LOSS_BOUND}")
    code, text = case.reconcile()
    expect(code == 1 and "killed or crashed" in text, f"reconcile should name the crash: {text.strip()}")
    return f"lost {lost} of {load.answered} (bound {KILL_LOSS_BOUND}); reconcile names the crash"


def postgres_restarted_during_replay(case):
    case.start_gateway()
    with Load(case.gateway_port, case.api_key) as load:
        time.sleep(2)
        pg("stop")
        time.sleep(10)
        pg("start")
        time.sleep(0.3)
        pg("stop")  # while the spool replays
        time.sleep(3)
        pg("start")
        time.sleep(3)
    case.wait_written()
    expect(case.stored() == load.answered, f"answered {load.answered}, stored {case.stored()}")
    balanced(case, load.answered)
    case.stop_gateway()
    return f"{load.answered} answered = stored"


def spool_full(case):
    # room for about a hundred events: the spool refuses the rest, which wait in memory
    case.start_gateway(TOLLGATE_METER_SPOOL_CAP_BYTES="20000")
    with Load(case.gateway_port, case.api_key) as load:
        time.sleep(2)
        pg("stop")
        time.sleep(6)
        state = (case.readyz() or {}).get("meter", {}).get("state")
        pg("start")
        time.sleep(3)
    expect(state == "degraded", f"readyz should say the meter is degraded, said {state}")
    case.wait_written()
    expect(case.stored() == load.answered, f"answered {load.answered}, stored {case.stored()}")
    balanced(case, load.answered)
    case.stop_gateway()
    return f"{load.answered} answered = stored; state degraded while the spool was full"


QUOTA = 300
LEASE_ADVANCE = 2  # calls a gateway may admit on credit beyond its lease (docs/ARCHITECTURE.md)


def gateways_share_a_quota(case, count):
    # the demo's Free plan as quota 300 at 1,000 calls/s: the quota, not the rate, ends the month
    case.sql(f"UPDATE plans SET rate_per_second = 1000, burst = 1000, monthly_quota = {QUOTA}, included_requests = {QUOTA} WHERE name = 'Free'")
    ports = [case.gateway_port] + [free_port() for _ in range(count - 1)]
    for port in ports:
        case.start_gateway(port)
    with Load(ports, case.api_key) as load:
        time.sleep(4)  # ~800 calls offered against a quota of 300
    for process in [case.gateway] + case.others:
        process.send_signal(signal.SIGTERM)
    for process in [case.gateway] + case.others:
        expect(process.wait(timeout=40) == 0, "a gateway did not exit cleanly")
    admitted = load.statuses.get(200, 0)
    expect(QUOTA <= admitted <= QUOTA + count * LEASE_ADVANCE, f"admitted {admitted} with {count} gateways, quota {QUOTA}: {load.statuses}")
    expect(case.stored() == load.answered, f"answered {load.answered}, stored {case.stored()}")
    used = int(case.sql("SELECT coalesce(sum(used), 0) FROM quota_usage"))
    expect(used == admitted, f"quota_usage says {used} used, {admitted} admitted")
    balanced(case, load.answered)
    return f"{count} gateways: admitted {admitted} of quota {QUOTA} ({load.answered} answered = stored, the rest 429)"


CASES = [
    ("postgres_stopped_15s_three_times", postgres_stopped_15s_three_times),
    ("postgres_killed", postgres_killed),
    ("gateway_sigterm_postgres_up", gateway_sigterm_postgres_up),
    ("gateway_sigterm_postgres_down", gateway_sigterm_postgres_down),
    ("gateway_killed_postgres_up", lambda c: gateway_killed(c, postgres_down=False)),
    ("gateway_killed_postgres_down", lambda c: gateway_killed(c, postgres_down=True)),
    ("postgres_restarted_during_replay", postgres_restarted_during_replay),
    ("spool_full", spool_full),
    ("two_gateways_share_a_quota", lambda c: gateways_share_a_quota(c, 2)),
    ("three_gateways_share_a_quota", lambda c: gateways_share_a_quota(c, 3)),
]


def main():
    only = sys.argv[1:]
    passed = failed = 0
    for name, run in CASES:
        if only and name not in only:
            continue
        started = time.time()
        case = None
        try:
            case = Case(name)
            summary = run(case)
            passed += 1
            print(f"ok   {name} ({time.time() - started:.0f} s): {summary}", flush=True)
        except Exception as error:
            failed += 1
            print(f"FAIL {name} ({time.time() - started:.0f} s): {error}", flush=True)
            if case:
                case.log.flush()
                with open(os.path.join(case.dir, "gateway.log"), errors="replace") as log:
                    for line in log.readlines()[-15:]:
                        print("     | " + line.rstrip()[:300], flush=True)
        finally:
            if case:
                case.close()
            pg("start", check=False)
    pg("stop", check=False)
    print(f"faults: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

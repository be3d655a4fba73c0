"""Three `kynsey serve` processes behind a real nginx act as one (issue 12 item 5, SPEC N5).

nginx (Debian's package; ``bin/test`` installs it) runs the configuration that
``docs/deploy.md`` documents, read from that page (one source), in front of
three instances on a private PostgreSQL database and Redis under a prefix of
this test's own, all asking one fake Ollama in a process of its own. Only the
addresses change (loopback ports), and the test adds one header naming the
instance that answered. Checked: replies stream through nginx unbuffered; a
SIGKILL of the instance writing a reply leaves the next requests working
through the others, and the other instances mark the killed reply
'interrupted' with its saved text; a user's chat limit and a flag change are
one across instances, and so is a circuit opened on one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from kynsey.storage.db import make_engine
from kynsey.storage.models import Message
from tests.conftest import HEALTHY_REDIS_TIMEOUT, OLLAMA_TIERS, REDIS_URL
from tests.live import eventually, free_port
from tests.pg import private_database
from tests.sse import events, text_of

ROOT = Path(__file__).resolve().parents[1]
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PYTHON_CLI = [sys.executable, "-m", "kynsey.cli"]
REPLY_TOKENS = 400  # at TOKEN_DELAY each: a reply long enough to kill mid-way
TOKEN_DELAY = 0.02
PRO_MODEL = "qwen2.5:14b-instruct"
CHAT_LIMIT = 4
FLAG_URL = "/api/admin/flags/model_switching"
UPSTREAM = "x-test-upstream"  # the instance nginx chose (added by the test's outer configuration)


def documented_nginx_config() -> str:
    """The one ```nginx block of docs/deploy.md."""
    blocks = re.findall(r"```nginx\n(.*?)```", DEPLOY_DOC.read_text(), re.S)
    assert len(blocks) == 1, "docs/deploy.md shows one nginx configuration"
    return blocks[0]


def nginx_config(prefix: Path, listen: int, ports: list[int]) -> str:
    """The documented configuration on loopback ports, inside a main configuration of the test's own."""
    conf = documented_nginx_config()
    servers = re.findall(r"^\s*server \S+:\d+ [^\n]*;$", conf, re.M)
    assert len(servers) == len(ports), servers
    for line, port in zip(servers, ports, strict=True):
        conf = conf.replace(line, re.sub(r"server \S+:\d+", f"server 127.0.0.1:{port}", line), 1)
    assert "listen 80;" in conf
    conf = conf.replace("listen 80;", f"listen 127.0.0.1:{listen};")
    temp = "\n".join(f"    {kind}_temp_path {prefix / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers as root can use the test's private temp folder
    return f"""{user}worker_processes 1;
daemon off;
pid {prefix / 'nginx.pid'};
error_log {prefix / 'error.log'} info;
events {{ worker_connections 512; }}
http {{
{temp}
    access_log {prefix / 'access.log'};
    # Test only: the documented location sets no add_header of its own, so it inherits this one.
    add_header {UPSTREAM} $upstream_addr always;
{conf}
}}
"""


def wait_until_answers(url: str, proc: subprocess.Popen, what: str, log: Path) -> None:
    def answers() -> bool:
        assert proc.poll() is None, f"{what} exited: {log_tail(log)}"
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    eventually(answers, f"{what} to answer", timeout=60)


def instance_log(folder: Path, port: int) -> Path:
    return folder / f"kynsey-{port}.log"


def log_tail(log: Path, lines: int = 40) -> str:
    """The last ``lines`` of a process's log, for a failure's message."""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else f"(no {log})"


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Cluster:
    url: str  # nginx
    db_url: str
    env: dict[str, str]
    logs: Path  # the folder of each instance's stderr (``instance_log``)
    instances: dict[int, subprocess.Popen] = field(default_factory=dict)  # port -> process

    def log_tails(self) -> str:
        """What every instance logged last: a failed check's message shows why (e.g. a database error)."""
        return "\n".join(f"--- instance {port}:\n{log_tail(instance_log(self.logs, port))}" for port in self.instances)

    def alive(self) -> list[int]:
        return [port for port, proc in self.instances.items() if proc.poll() is None]

    def cli(self, *args: str) -> str:
        done = subprocess.run([*PYTHON_CLI, *args], env=self.env, capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def token(self, name: str, *, admin: bool = False) -> str:
        self.cli("user", "add", name, "--plan", "pro", "--no-password", *(["--admin"] if admin else []))
        return self.cli("user", "token", name)

    def client(self, token: str, port: int | None = None) -> httpx.Client:
        base = self.url if port is None else f"http://127.0.0.1:{port}"
        return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def stored(self, message_id: str) -> tuple[str, str]:
        async def read() -> tuple[str, str]:
            engine = make_engine(self.db_url)
            try:
                async with engine.connect() as conn:
                    query = select(Message.status, Message.content).where(Message.id == message_id)
                    status, content = (await conn.execute(query)).one()
                    return status, content
            finally:
                await engine.dispose()

        return asyncio.run(read())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    if not Path(NGINX).exists():
        pytest.fail("the load balancer test needs nginx (./bin/test installs it: apt-get install nginx)")
    tmp = tmp_path_factory.mktemp("lb")
    with contextlib.ExitStack() as stack, private_database("kynsey_lb") as db_url:
        ollama = subprocess.Popen(
            [sys.executable, "-m", "tests.servers.fake_ollama", "--port", "0",
             "--models", "llama3.2:3b-instruct-fp16,qwen2.5:14b-instruct,qwen2.5-coder:7b-instruct",
             "--loaded", "llama3.2:3b-instruct-fp16", "--reply-tokens", str(REPLY_TOKENS),
             "--token-delay", str(TOKEN_DELAY)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True,
        )
        stack.callback(stop, ollama)
        ollama_url = ollama.stdout.readline().strip()
        env = {
            **os.environ,
            "KYNSEY_DATABASE_URL": db_url,
            "KYNSEY_REDIS_URL": REDIS_URL,
            "KYNSEY_REDIS_TIMEOUT": str(HEALTHY_REDIS_TIMEOUT),
            "KYNSEY_REDIS_PREFIX": f"kynsey-lb-{uuid.uuid4().hex[:8]}",
            "KYNSEY_TIERS": str(OLLAMA_TIERS),
            "KYNSEY_DATA_DIR": str(tmp / "data"),
            "OLLAMA_HOST": ollama_url,
            "KYNSEY_STREAM_STALE_SECONDS": "2",  # another instance marks a dead one's reply within seconds
            "KYNSEY_CHAT_FLUSH_SECONDS": "0.1",
            "KYNSEY_FLAG_CACHE_SECONDS": "0.3",
            "KYNSEY_STATUS_REFRESH": "0.5",
            "KYNSEY_CHAT_RATE_LIMIT": f"{CHAT_LIMIT}/minute",
            "KYNSEY_SHUTDOWN_GRACE": "1",
        }
        ports = [free_port() for _ in range(3)]
        instances = {}
        for port in ports:
            # A file, not a pipe no one reads: a full pipe would stall the instance's logging.
            with instance_log(tmp, port).open("wb") as log:
                proc = subprocess.Popen([*PYTHON_CLI, "serve", "--port", str(port)], env=env, stderr=log,
                                        stdin=subprocess.DEVNULL)
            stack.callback(stop, proc)
            instances[port] = proc
        for port, proc in instances.items():
            wait_until_answers(f"http://127.0.0.1:{port}", proc, f"kynsey serve on port {port}", instance_log(tmp, port))

        listen = free_port()
        (tmp / "nginx.conf").write_text(nginx_config(tmp, listen, ports))
        nginx = subprocess.Popen([NGINX, "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-e", str(tmp / "error.log")],
                                 stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        stack.callback(stop, nginx)
        wait_until_answers(f"http://127.0.0.1:{listen}", nginx, "nginx", tmp / "error.log")
        yield Cluster(f"http://127.0.0.1:{listen}", db_url, env, tmp, instances)


def port_of(resp: httpx.Response) -> int:
    """The instance that answered through nginx (the last one it tried)."""
    return int(resp.headers[UPSTREAM].split(",")[-1].strip().rsplit(":", 1)[1])


def test_a_killed_instance_costs_its_reply_only_and_the_others_mark_it_interrupted(cluster):
    alice = cluster.client(cluster.token("alice"))
    cid = alice.post("/api/conversations", json={}).json()["id"]
    seen = ""
    with alice.stream("POST", f"/api/conversations/{cid}/messages", json={"content": "a long one"}) as resp:
        assert resp.status_code == 200
        writer = port_of(resp)
        stream = events(resp)
        name, start = next(stream)
        assert name == "start"
        name, delta = next(stream)
        assert name == "delta"
        seen += delta["text"]
        # Unbuffered: a delta went through nginx while the reply is still being written.
        assert cluster.stored(start["message_id"])[0] == "streaming"
        eventually(lambda: cluster.stored(start["message_id"])[1], "some text saved")
        os.kill(cluster.instances[writer].pid, signal.SIGKILL)
        cluster.instances[writer].wait(timeout=10)
        try:
            for name, data in stream:
                assert name == "delta", (name, data)  # no 'done': the reply's writer is gone
                seen += data["text"]
        except httpx.HTTPError:  # nginx ends the response without its last chunk
            pass

    others = set(cluster.alive())
    assert writer not in others and len(others) == 2
    # The next requests succeed through the others: nginx passes a request the dead instance
    # refused on to the next one, then leaves the dead one out.
    for _ in range(6):
        resp = alice.get("/api/conversations")
        assert resp.status_code == 200 and port_of(resp) in others, resp.headers
    again = alice.post("/api/conversations", json={}).json()["id"]
    with alice.stream("POST", f"/api/conversations/{again}/messages", json={"content": "still there?"}) as resp:
        assert resp.status_code == 200 and port_of(resp) in others
        answered = list(events(resp))
    assert answered[-1][0] == "done" and text_of(answered).strip(), (answered[-1], cluster.log_tails())

    def interrupted():
        messages = alice.get(f"/api/conversations/{cid}").json()["messages"]
        return messages if messages[-1]["status"] == "interrupted" else None

    messages = eventually(interrupted, "another instance marks the killed reply interrupted")
    kept = messages[-1]["content"]
    full = "".join(f" w{i}" for i in range(REPLY_TOKENS))
    assert kept and seen.startswith(kept) and full.strip().startswith(kept.strip()) and len(kept) < len(full)
    assert messages[-1]["error"]
    assert cluster.stored(start["message_id"]) == ("interrupted", kept)


def test_a_users_chat_limit_is_one_across_instances(cluster):
    token = cluster.token("bob")
    ports = cluster.alive()
    statuses = []
    for i in range(CHAT_LIMIT + 2):  # alternating instances, straight and through nginx
        client = cluster.client(token, None if i % 3 == 2 else ports[i % len(ports)])
        cid = client.post("/api/conversations", json={}).json()["id"]
        with client.stream("POST", f"/api/conversations/{cid}/messages", json={"content": f"n{i}"}) as resp:
            statuses.append(resp.status_code)  # an accepted reply goes on without us: we leave at its start
            if resp.status_code == 429:
                assert resp.read() and resp.json()["error"]["code"] == "rate_limited"
                assert resp.headers["retry-after"]
    assert statuses == [200] * CHAT_LIMIT + [429, 429]


def test_a_flag_change_through_one_instance_holds_on_every_instance(cluster):
    admin, carol = cluster.token("root", admin=True), cluster.token("carol")
    ports = cluster.alive()
    first, rest = ports[0], ports[1:]
    assert cluster.client(admin, first).put(FLAG_URL, json={"state": "off"}).status_code == 200
    try:
        for port in rest:
            user = cluster.client(carol, port)
            eventually(lambda user=user: user.get("/api/models/tiers").json()["switching_enabled"] is False,
                       f"the instance on {port} sees the flag off")
        through = cluster.client(carol)
        for _ in range(len(ports)):
            assert through.get("/api/models/tiers").json()["switching_enabled"] is False
    finally:
        assert cluster.client(admin, first).put(FLAG_URL, json={"state": "on"}).status_code == 200


def test_a_circuit_opened_on_one_instance_is_open_on_every_instance(cluster):
    """Circuits stay one: the fake Ollama fails `pro`'s model; chats through one instance open its
    circuit (KYNSEY_CIRCUIT_FAILURES, 3, each answered by the `standard` fallback), and every
    instance, straight and through nginx, shows it not closed (open, or half-open once a probe sees
    the model again: the next request is a trial). The model recovers; one trial chat through
    another instance closes the circuit on every instance."""
    ollama = cluster.env["OLLAMA_HOST"]
    dave = cluster.token("dave")
    first, second, *_ = cluster.alive()
    everywhere = [*cluster.alive(), None]  # each instance straight, then nginx

    def chat(port: int) -> list:
        client = cluster.client(dave, port)
        cid = client.post("/api/conversations", json={}).json()["id"]
        with client.stream("POST", f"/api/conversations/{cid}/messages", json={"content": "hi"}) as resp:
            seen = list(events(resp))
        assert seen[-1][0] == "done", (seen[-1], cluster.log_tails())
        return seen

    def pro_circuit(port: int | None) -> str:
        models = cluster.client(dave, port).get("/api/models/status").json()["models"]
        return next(m for m in models if m["tier"] == "pro")["circuit"]

    assert cluster.client(dave, first).post("/api/models/tier", json={"tier": "pro"}).status_code in (200, 202)
    assert httpx.post(f"{ollama}/fake/fail", json={"model": PRO_MODEL, "mode": "error_500"}).status_code == 200
    try:
        for _ in range(3):
            assert chat(first)[0][1]["fallback_from"] == "pro"
        for port in everywhere:
            eventually(lambda port=port: pro_circuit(port) != "closed", f"{port or 'nginx'}: pro's circuit not closed")
    finally:
        httpx.post(f"{ollama}/fake/fail", json={"model": PRO_MODEL, "mode": None})
    eventually(lambda: pro_circuit(second) == "half_open", "a probe on the other instance to see the model again")
    assert "fallback_from" not in chat(second)[0][1]  # the trial: pro answers
    for port in everywhere:
        eventually(lambda port=port: pro_circuit(port) == "closed", f"{port or 'nginx'}: pro's circuit closed again")

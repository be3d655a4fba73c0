"""`kynsey serve --workers N` (issue 12 item 3): N processes on one port, and a clear refusal of
whatever one process holds alone and N processes would silently split N ways."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx

from tests.conftest import OLLAMA_TIERS, REDIS_URL
from tests.live import eventually, free_port
from tests.pg import private_database
from tests.servers.fake_ollama import FakeOllama
from tests.sse import events
from tests.test_serve_startup import env_for, serve_fails


def shared_env(tmp_path: Path, db_url: str, **extra: str) -> dict[str, str]:
    return env_for(tmp_path, KYNSEY_DATABASE_URL=db_url, KYNSEY_REDIS_URL=REDIS_URL,
                   KYNSEY_REDIS_PREFIX=f"kynsey-workers-{uuid.uuid4().hex[:8]}", **extra)


def test_sqlite_is_refused_with_the_reason(tmp_path):
    done = serve_fails(env_for(tmp_path, KYNSEY_REDIS_URL=REDIS_URL), "--workers", "2", "--port", str(free_port()))
    assert done.returncode == 2
    assert done.stderr.startswith("error: --workers 2 needs PostgreSQL (KYNSEY_DATABASE_URL)"), done.stderr
    assert "database is locked" in done.stderr


def test_in_memory_limits_are_refused_with_the_reason(tmp_path):
    with private_database("kynsey_workers") as db_url:
        done = serve_fails(env_for(tmp_path, KYNSEY_DATABASE_URL=db_url), "--workers", "3", "--port", str(free_port()))
    assert done.returncode == 2
    assert done.stderr.startswith("error: --workers 3 needs KYNSEY_REDIS_URL"), done.stderr
    assert "3 workers would allow 3 times every limit" in done.stderr


def test_local_tiers_are_refused_with_the_reason(tmp_path):
    with private_database("kynsey_workers") as db_url:
        env = shared_env(tmp_path, db_url)
        del env["KYNSEY_TIERS"]  # the built-in catalog: its `local` tier runs llama.cpp in the process
        done = serve_fails(env, "--workers", "2", "--port", str(free_port()))
    assert done.returncode == 2
    assert done.stderr.startswith("error: --workers 2 cannot serve the local tier(s) local: each worker would load "
                                  "its own copy"), done.stderr


def test_the_setting_is_read_too_and_one_worker_needs_nothing_more(tmp_path):
    done = serve_fails(env_for(tmp_path, KYNSEY_WORKERS="2"), "--port", str(free_port()))
    assert done.stderr.startswith("error: --workers 2 needs PostgreSQL")


def children(pid: int) -> set[int]:
    return set(map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split()))


def running(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's reaper may be slow or absent)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def connections_held(pid: int, port: int) -> int:
    """Established TCP connections to ``port`` whose server side this process holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    held = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        cols = line.split()
        local_port = int(cols[1].rsplit(":", 1)[1], 16)
        if local_port == port and cols[3] == "01" and cols[9] in inodes:  # 01: ESTABLISHED
            held += 1
    return held


def test_workers_share_the_port_are_replaced_when_they_die_and_stop_within_the_bound(tmp_path):
    with private_database("kynsey_workers") as db_url, FakeOllama(
        models={"llama3.2:3b-instruct-fp16": 1, "qwen2.5:14b-instruct": 1, "qwen2.5-coder:7b-instruct": 1},
        loaded=["llama3.2:3b-instruct-fp16"],
    ) as fake:
        env = shared_env(tmp_path, db_url, OLLAMA_HOST=fake.url, KYNSEY_TIERS=str(OLLAMA_TIERS),
                         KYNSEY_SHUTDOWN_GRACE="1")
        made = subprocess.run([sys.executable, "-m", "kynsey.cli", "user", "add", "alice", "--plan", "pro",
                               "--no-password"], env=env, capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stderr
        token = subprocess.run([sys.executable, "-m", "kynsey.cli", "user", "token", "alice"], env=env,
                               capture_output=True, text=True, timeout=60).stdout.strip()
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "kynsey.cli", "serve", "--port", str(port), "--workers", "2"],
                                env=env, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        url = f"http://127.0.0.1:{port}"
        try:
            workers = eventually(lambda: len(children(proc.pid)) == 2 and children(proc.pid), "two workers")

            def answers() -> bool:
                assert proc.poll() is None, proc.stderr.read()
                try:
                    return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
                except httpx.TransportError:
                    return False

            eventually(answers, "the workers answer", timeout=60)
            # Both serve: open connections until each worker holds some (the kernel picks the acceptor).
            clients: list[httpx.Client] = []

            def both_serve() -> bool:
                client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
                clients.append(client)
                assert client.get("/api/auth/me").status_code == 200
                return all(connections_held(pid, port) for pid in workers)

            eventually(both_serve, "each worker holding a connection", timeout=60)
            for client in clients:
                client.close()

            # A worker that dies is replaced, and the port answers meanwhile through the other.
            dead = min(workers)
            os.kill(dead, signal.SIGKILL)
            replaced = eventually(lambda: len(children(proc.pid)) == 2 and dead not in children(proc.pid)
                                  and children(proc.pid), "a new worker in place of the killed one")
            eventually(answers, "the port answers after a worker died")

            # SIGTERM: a long reply gets the grace period, then ends with an error event; every worker exits.
            fake.reply = " ".join(f"t{i}" for i in range(3000))
            fake.token_delay = 0.02
            client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
            cid = client.post("/api/conversations", json={}).json()["id"]
            seen = []
            with client.stream("POST", f"/api/conversations/{cid}/messages", json={"content": "long"}) as resp:
                for name, _ in events(resp):
                    seen.append(name)
                    if name == "delta" and seen.count("delta") == 1:
                        proc.send_signal(signal.SIGTERM)
            assert seen[-1] == "error" and "done" not in seen
            assert proc.wait(timeout=30) == 0
            assert not any(running(pid) for pid in replaced)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_workers_whose_parent_is_killed_shut_down_instead_of_serving_on(tmp_path):
    with private_database("kynsey_workers") as db_url:
        env = shared_env(tmp_path, db_url, KYNSEY_SHUTDOWN_GRACE="1")
        proc = subprocess.Popen([sys.executable, "-m", "kynsey.cli", "serve", "--port", str(free_port()),
                                 "--workers", "2"], env=env, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        try:
            workers = eventually(lambda: len(children(proc.pid)) == 2 and children(proc.pid), "two workers", timeout=60)
        finally:
            proc.kill()
            proc.wait()
        eventually(lambda: not any(running(pid) for pid in workers), "the orphaned workers gone")


def test_a_reload_that_adds_a_local_tier_is_refused_while_several_workers_run(start_server, fake_ollama, tmp_path):
    path = tmp_path / "tiers.toml"
    path.write_text(OLLAMA_TIERS.read_text())
    server = start_server(ollama_host=fake_ollama.url, tiers=path, workers=2)
    admin = server.client(server.add_user("root", "pro", admin=True))
    path.write_text((Path(__file__).parents[1] / "kynsey" / "catalog" / "default_tiers.toml").read_text())
    resp = admin.post("/api/admin/catalog/reload")
    error = resp.json()["error"]
    assert resp.status_code == 422 and error["code"] == "invalid_catalog" and error["tier"] == "local", error
    assert "2 worker processes each would load its own copy" in error["message"]
    assert [t["tier"] for t in admin.get("/api/models/tiers").json()["tiers"]] == ["standard", "pro", "code"]


CRASH_LOOP = """
import socket, sys, time
from kynsey.web import workers

def serve_one(sock, watch_parent):  # starts, then dies at once, every time: a crash loop
    with open(sys.argv[1], "a") as starts:
        starts.write(f"{time.monotonic()}\\n")
    return True

workers.Workers(1, socket.socket(), serve_one, 1.0).run()
"""


def test_a_worker_that_keeps_dying_young_is_replaced_ever_more_slowly(tmp_path):
    from kynsey.web.workers import FIRST_PAUSE

    starts = tmp_path / "starts"
    proc = subprocess.Popen([sys.executable, "-c", CRASH_LOOP, str(starts)], stderr=subprocess.PIPE, text=True)
    try:
        eventually(lambda: starts.exists() and len(starts.read_text().split()) >= 4, "four workers started")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    times = [float(t) for t in starts.read_text().split()]
    pauses = [later - earlier for earlier, later in itertools.pairwise(times)]
    for n, pause in enumerate(pauses[:3]):  # 0.5, 1, 2 s: not ten forks a second
        assert pause >= FIRST_PAUSE * 2**n, pauses
    assert "starting another in 0.5 s" in proc.stderr.read()

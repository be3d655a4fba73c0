"""Kill the server with SIGKILL mid-reply: nothing acknowledged is lost (SPEC F5, N3)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from sqlalchemy import select

from kynsey.storage.db import make_engine
from kynsey.storage.models import Message
from tests.live import eventually, free_port
from tests.sse import events

PYTHON_CLI = [sys.executable, "-m", "kynsey.cli"]



def cli(env: dict, *args: str) -> str:
    done = subprocess.run([*PYTHON_CLI, *args], env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def serve(env: dict, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([*PYTHON_CLI, "serve", "--port", str(port)], env=env, stderr=subprocess.PIPE)
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.05)
    raise AssertionError("kynsey serve did not start")


def stored_reply_text(db_url: str, message_id: str) -> str:
    """What the database holds (not what the live process shows)."""

    async def read() -> str:
        engine = make_engine(db_url)
        try:
            async with engine.connect() as conn:
                return (await conn.execute(select(Message.content).where(Message.id == message_id))).scalar_one()
        finally:
            await engine.dispose()

    return asyncio.run(read())



def test_sigkill_mid_reply_keeps_the_message_and_the_partial_reply(db_url, fake_ollama, tmp_path):
    env = {
        **os.environ,
        "KYNSEY_DATABASE_URL": db_url,
        "KYNSEY_DATA_DIR": str(tmp_path),
        "OLLAMA_HOST": fake_ollama.url,
        "KYNSEY_STREAM_STALE_SECONDS": "1",
        "KYNSEY_CHAT_FLUSH_SECONDS": "0.1",
    }
    cli(env, "user", "add", "alice", "--plan", "pro")
    token = cli(env, "user", "token", "alice")
    port = free_port()
    fake_ollama.reply = " ".join(f"t{i}" for i in range(400))
    fake_ollama.token_delay = 0.02
    proc = serve(env, port)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    try:
        cid = client.post("/api/conversations", json={}).json()["id"]
        with client.stream("POST", f"/api/conversations/{cid}/messages", json={"content": "keep me"}) as resp:
            stream = events(resp)
            name, start = next(stream)
            assert name == "start" and next(stream)[0] == "delta"
            eventually(lambda: stored_reply_text(db_url, start["message_id"]), "partial text saved")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    proc = serve(env, port)
    try:
        def recovered():
            messages = client.get(f"/api/conversations/{cid}").json()["messages"]
            return messages if messages[-1]["status"] == "interrupted" else None

        messages = eventually(recovered, "the reply marked interrupted")
        assert [(m["role"], m["status"]) for m in messages] == [("user", "complete"), ("assistant", "interrupted")]
        assert messages[0]["content"] == "keep me"
        partial = messages[1]["content"]
        assert partial and fake_ollama.reply.startswith(partial) and len(partial) < len(fake_ollama.reply)
        assert messages[1]["error"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


def stored_reply(db_url: str, message_id: str) -> tuple[str, str]:
    async def read() -> tuple[str, str]:
        engine = make_engine(db_url)
        try:
            async with engine.connect() as conn:
                row = (await conn.execute(select(Message.status, Message.content).where(Message.id == message_id))).one()
                return row[0], row[1]
        finally:
            await engine.dispose()

    return asyncio.run(read())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_shutdown_ends_long_replies_after_the_grace_period_and_saves_them(db_url, fake_ollama, tmp_path, sig):
    """SIGTERM (a supervisor) or Ctrl+C: running replies get the grace period, then each client gets an
    error event and the reply is saved 'interrupted' with every word the client saw; the process exits."""
    env = {
        **os.environ,
        "KYNSEY_DATABASE_URL": db_url,
        "KYNSEY_DATA_DIR": str(tmp_path),
        "OLLAMA_HOST": fake_ollama.url,
        "KYNSEY_SHUTDOWN_GRACE": "1",
    }
    cli(env, "user", "add", "alice", "--plan", "pro")
    token = cli(env, "user", "token", "alice")
    port = free_port()
    fake_ollama.reply = " ".join(f"t{i}" for i in range(3000))  # a minute of tokens: far past the grace
    fake_ollama.token_delay = 0.02
    proc = serve(env, port)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    try:
        cid = client.post("/api/conversations", json={}).json()["id"]
        seen = []
        with client.stream("POST", f"/api/conversations/{cid}/messages", json={"content": "a long one"}) as resp:
            for name, data in events(resp):
                seen.append((name, data))
                if len(seen) == 3:
                    proc.send_signal(sig)
        assert proc.wait(timeout=30) in (0, -sig, 128 + sig)  # uvicorn re-raises the signal it caught
    finally:
        if proc.poll() is None:
            proc.kill()
    name, data = seen[-1]
    assert name == "error" and data["code"] == "shutdown", seen[-1]
    said = "".join(d["text"] for n, d in seen if n == "delta")
    status, content = stored_reply(db_url, seen[0][1]["message_id"])
    assert status == "interrupted"
    assert content.startswith(said) and fake_ollama.reply.startswith(content) and len(content) < len(fake_ollama.reply)

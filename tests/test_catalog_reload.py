"""The catalog reloads without a restart: by an admin, or when its file changes (SPEC F1, N5)."""

from __future__ import annotations

import os
import time

from tests.conftest import OLLAMA_TIERS


def catalog_text(extra_description: str = "") -> str:
    text = OLLAMA_TIERS.read_text()
    return text.replace("Fast and efficient for everyday tasks", f"Fast and efficient{extra_description}")


def test_an_admin_reload_swaps_the_catalog_and_a_bad_file_changes_nothing(start_server, fake_ollama, tmp_path):
    path = tmp_path / "tiers.toml"
    path.write_text(catalog_text())
    server = start_server(ollama_host=fake_ollama.url, tiers=path)
    admin = server.client(server.add_user("root", "pro", admin=True))
    path.write_text(catalog_text(" - now reloaded"))
    resp = admin.post("/api/admin/catalog/reload")
    assert resp.status_code == 200 and resp.json()["tiers"] == ["standard", "pro", "code"]
    standard = admin.get("/api/models/tiers").json()["tiers"][0]
    assert standard["description"] == "Fast and efficient - now reloaded" and standard["status"] == "ready"
    path.write_text(catalog_text().replace('fallback = ["standard"]', 'fallback = ["nowhere"]'))
    resp = admin.post("/api/admin/catalog/reload")
    error = resp.json()["error"]
    assert resp.status_code == 422 and error["code"] == "invalid_catalog"
    assert (error["file"], error["tier"], error["field"]) == (str(path), "pro", "fallback")
    assert admin.get("/api/models/tiers").json()["tiers"][0]["description"] == "Fast and efficient - now reloaded"
    assert server.client(server.add_user("sam", "pro")).post("/api/admin/catalog/reload").status_code == 403


def test_every_instance_picks_up_a_changed_file_by_itself(start_server, fake_ollama, tmp_path):
    path = tmp_path / "tiers.toml"
    path.write_text(catalog_text())
    servers = [start_server(ollama_host=fake_ollama.url, tiers=path) for _ in range(2)]
    token = servers[0].add_user("alice", "pro")
    path.write_text(catalog_text(" on every instance"))
    os.utime(path, (time.time() + 5, time.time() + 5))  # a distinct mtime even on coarse clocks
    for server in servers:
        client = server.client(token)
        for _ in range(100):
            if client.get("/api/models/tiers").json()["tiers"][0]["description"].endswith("on every instance"):
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"{server.url} never reloaded the catalog")

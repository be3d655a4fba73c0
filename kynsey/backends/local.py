"""The ``local`` backend: GGUF models run in-process by llama.cpp (SPEC F17).

It behaves like the Ollama backend, with the same errors: ``probe`` reports
each tier's model as cold or ready, ``load`` preloads, ``unload`` frees, and
``chat`` streams. Ollama's runner rules are kept: ``keep_alive`` decides when
an idle model is unloaded, a different ``num_ctx`` reloads, at most
``max_loaded`` models stay in memory (least recently used goes first), and
each model serves one generation at a time with at most ``max_queue``
waiting (more is ``BackendBusy``, like Ollama's 503).

How the work is split:
- llama.cpp calls (load, generate, free) run in this backend's own thread
  pool, never on the event loop; tokens come back through an asyncio queue.
- Each model has a slot whose ``asyncio.Lock`` serialises its loads and
  generations. ``users`` counts who holds or waits for the lock: a model
  with users is never unloaded; unloading it is deferred until they finish.
- A slot is released only when its worker thread has really finished, so a
  stopped stream can never overlap the next generation on the same model.
- A reaper task, started on first use, unloads idle models whose keep-alive
  ran out or that a load past ``max_loaded`` (or ``unload``) marked while
  they were streaming.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncGenerator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kynsey.backends.base import Backend, BackendSnapshot, ChatChunk, ChatMessage, HostSnapshot, ModelState
from kynsey.backends.keep_alive import keep_alive_seconds
from kynsey.backends.local_models import (
    DEFAULT_THREADS,
    Finished,
    Generation,
    ModelNotFound,
    Runner,
    call_soon,
    check_gguf,
    close_result,
    find_model,
    llama_cpp,
    open_runner,
    packaged_models,
)
from kynsey.catalog.schema import BackendConfig, TierProfile
from kynsey.errors import (
    BackendBusy,
    BackendError,
    CatalogError,
    ModelLoadFailed,
    ModelMissing,
    PromptTooLong,
    StreamBroken,
)

DEFAULT_KEEP_ALIVE = 300.0  # Ollama's default: 5 minutes
CONTEXT_EXCEEDED = "exceed context window"  # llama-cpp-python's ValueError: "Requested tokens (N) exceed context window of M"
# Sampling options shared by Ollama's names and llama-cpp-python's arguments.
SAMPLING_OPTIONS = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "presence_penalty", "frequency_penalty", "seed", "stop")
# Ollama's defaults (its Modelfile documentation) for those a tier and a request leave out, so that a
# local tier samples as an Ollama tier would. llama-cpp-python's own (temperature 0.2, no repeat
# penalty) let SmolLM2 repeat itself to the token limit in 6 of 12 answers (2 questions x 6 seeds,
# 600 tokens at most), against none of 12 with these.
OLLAMA_SAMPLING = {"temperature": 0.8, "top_k": 40, "top_p": 0.9, "repeat_penalty": 1.1}


@dataclass(eq=False)
class _Slot:
    """One model: its file, its llama.cpp instance when loaded, and who uses it."""

    model_id: str
    path: Path
    size: int
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    runner: Runner | None = None
    n_ctx: int | None = None
    users: int = 0
    loading: bool = False
    evict: bool = False
    keep_alive: float | None = DEFAULT_KEEP_ALIVE
    deadline: float | None = None
    last_used: float = 0.0
    job: asyncio.Future | None = None
    stop: threading.Event | None = None


class LocalBackend(Backend):
    kind = "local"

    def __init__(self, name: str, config: BackendConfig, tiers: Sequence[TierProfile], data_dir: Path) -> None:
        super().__init__(name)
        self.config = config
        self._slots = self._discover(tiers, [Path(d).expanduser() for d in config.model_dirs] + [Path(data_dir) / "models"])
        self._executor = ThreadPoolExecutor(max_workers=len(self._slots) + 2, thread_name_prefix=f"kynsey-{name}")
        self._reaper: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None
        self.snapshot = self._snapshot()

    def _discover(self, tiers: Sequence[TierProfile], folders: list[Path]) -> dict[str, _Slot]:
        source, slots, packages = f"backend '{self.name}'", {}, None
        for tier in tiers:
            try:
                keep_alive_seconds(tier.keep_alive)
            except BackendError as exc:
                raise CatalogError(source, exc.message, tier=tier.tier, field="keep_alive") from exc
            if tier.model_id in slots:
                continue
            try:
                packages = packages if packages is not None else packaged_models()
                path = find_model(tier.model_id, folders, packages)
                check_gguf(path)
            except ModelNotFound as exc:
                raise CatalogError(source, str(exc), tier=tier.tier, field="model_id") from exc
            slots[tier.model_id] = _Slot(tier.model_id, path, path.stat().st_size)
        return slots

    # -- status -----------------------------------------------------------------
    async def probe(self, timeout: float) -> BackendSnapshot:
        self.snapshot = self._snapshot()
        return self.snapshot

    def _snapshot(self) -> BackendSnapshot:
        models = {slot.model_id: self._state(slot) for slot in self._slots.values()}
        host = HostSnapshot(f"local://{self.name}", True, llama_cpp.__version__, 0.0, None, models)
        return BackendSnapshot(self.name, self.kind, (host,))

    @staticmethod
    def _state(slot: _Slot) -> ModelState:
        loaded = slot.runner is not None
        expires = None
        if loaded and slot.users == 0 and slot.deadline is not None:
            expires = (datetime.now(UTC) + timedelta(seconds=slot.deadline - time.monotonic())).isoformat()
        details = {"path": str(slot.path), "format": "gguf"}
        installed = loaded or slot.path.is_file()  # the file may go away after start-up
        return ModelState(slot.model_id, installed, loaded, size=slot.size, expires_at=expires, details=details)

    def _slot(self, model_id: str) -> _Slot:
        slot = self._slots.get(model_id)
        if slot is None:
            served = ", ".join(sorted(self._slots)) or "none"
            raise ModelMissing(f"model '{model_id}' is not served by backend '{self.name}' (it serves: {served})", model=model_id)
        return slot

    # -- load / unload ------------------------------------------------------------
    async def load(self, model_id: str, *, keep_alive: str | int, options: dict[str, Any]) -> float:
        slot, keep = self._slot(model_id), keep_alive_seconds(keep_alive)
        if slot.runner is not None and slot.n_ctx == self._n_ctx(options):
            slot.keep_alive = keep  # already loaded: only the keep-alive changes, even mid-stream
            if slot.users == 0:
                self._touch(slot)
            return 0.0
        await self._acquire(slot)
        try:
            slot.keep_alive = keep
            return await self._ensure_loaded(slot, options)
        finally:
            self._release(slot)

    async def unload(self, model_id: str) -> None:
        slot = self._slot(model_id)
        if slot.users:
            # Never under a running stream: the reaper frees it once its users finish.
            slot.evict = True
            return
        await self._free(slot)
        self.snapshot = self._snapshot()

    async def _acquire(self, slot: _Slot) -> None:
        self._start_reaper()
        slot.users += 1
        try:
            await slot.lock.acquire()
        except BaseException:
            slot.users -= 1
            raise

    def _release(self, slot: _Slot) -> None:
        slot.users -= 1
        slot.job = slot.stop = None
        self._touch(slot)
        slot.lock.release()
        self.snapshot = self._snapshot()

    def _touch(self, slot: _Slot) -> None:
        slot.last_used = time.monotonic()
        if slot.evict:
            slot.deadline = slot.last_used
        else:
            slot.deadline = None if slot.keep_alive is None else slot.last_used + slot.keep_alive
        if self._wake is not None:
            self._wake.set()

    def _n_ctx(self, options: dict[str, Any]) -> int:
        return int(options.get("num_ctx") or self.config.n_ctx)

    async def _ensure_loaded(self, slot: _Slot, options: dict[str, Any]) -> float:
        """Load (or reload for another num_ctx) the slot's model; the caller holds its lock."""
        n_ctx = self._n_ctx(options)
        if slot.runner is not None and slot.n_ctx == n_ctx:
            return 0.0
        if not slot.path.is_file():
            raise ModelMissing(f"model '{slot.model_id}' is gone: no file at {slot.path}", model=slot.model_id)
        slot.loading = True  # counts as loaded for other loads making room at the same time
        try:
            await self._free(slot)
            await self._make_room(keep=slot)
            started = time.perf_counter()
            future = self._executor.submit(open_runner, slot.path, n_ctx, int(options.get("num_thread") or DEFAULT_THREADS))
            try:
                slot.runner = await asyncio.wrap_future(future)
            except asyncio.CancelledError:
                future.add_done_callback(close_result)
                raise
            except Exception as exc:
                raise ModelLoadFailed(f"model '{slot.model_id}' failed to load from {slot.path}: {exc}", model=slot.model_id) from exc
        finally:
            slot.loading = False
        slot.n_ctx = n_ctx
        return round((time.perf_counter() - started) * 1000, 3)

    async def _make_room(self, keep: _Slot) -> None:
        """Unload least recently used idle models until one more fits under max_loaded."""
        while True:
            others = [s for s in self._slots.values() if s is not keep and (s.runner is not None or s.loading)]
            if len(others) < self.config.max_loaded:
                return
            idle = [s for s in others if s.runner is not None and s.users == 0]
            if not idle:
                # Every other model is in use: load anyway, and have the least recently
                # used one unloaded as soon as its streams end (never under a stream).
                min(others, key=lambda s: s.last_used).evict = True
                return
            await self._free(min(idle, key=lambda s: s.last_used))

    async def _free(self, slot: _Slot) -> None:
        runner, slot.runner, slot.n_ctx, slot.deadline, slot.evict = slot.runner, None, None, None, False
        if runner is not None:
            await asyncio.wrap_future(self._executor.submit(runner.close))

    # -- reaper -------------------------------------------------------------------
    def _start_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._wake = asyncio.Event()
            self._reaper = asyncio.get_running_loop().create_task(self._reap_forever(), name=f"kynsey-{self.name}-reaper")

    async def _reap_forever(self) -> None:
        wake = self._wake = self._wake or asyncio.Event()
        while True:
            wake.clear()
            await self._reap_once()
            deadlines = [s.deadline for s in self._slots.values() if s.runner is not None and s.users == 0 and s.deadline is not None]
            delay = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            try:
                async with asyncio.timeout(delay):
                    await wake.wait()
            except TimeoutError:
                pass

    async def _reap_once(self) -> None:
        """Unload idle models whose keep-alive ran out or that were marked for eviction."""
        for slot in list(self._slots.values()):
            if slot.runner is not None and slot.users == 0 and slot.deadline is not None and slot.deadline <= time.monotonic():
                await self._free(slot)
        self.snapshot = self._snapshot()

    # -- chat ---------------------------------------------------------------------
    async def chat(
        self, model_id: str, messages: Sequence[ChatMessage], *, options: dict[str, Any], keep_alive: str | int
    ) -> AsyncGenerator[ChatChunk, None]:
        slot, keep = self._slot(model_id), keep_alive_seconds(keep_alive)
        if slot.users > self.config.max_queue:
            raise BackendBusy(
                f"model '{model_id}' is busy: {slot.users - 1} request(s) already wait (max_queue={self.config.max_queue})",
                model=model_id,
            )
        await self._acquire(slot)
        generation = None
        try:
            slot.keep_alive = keep
            load_ms = await self._ensure_loaded(slot, options)
            generation = self._start(slot, messages, options)
            async with aclosing(self._relay(model_id, generation, load_ms)) as chunks:
                async for chunk in chunks:
                    yield chunk
        finally:
            if generation is None:
                self._release(slot)
            else:
                generation.stop.set()  # no-op once it finished; the thread's end releases the slot

    def _start(self, slot: _Slot, messages: Sequence[ChatMessage], options: dict[str, Any]) -> Generation:
        kwargs: dict[str, Any] = OLLAMA_SAMPLING | {k: options[k] for k in SAMPLING_OPTIONS if options.get(k) is not None}
        predict = options.get("num_predict")
        kwargs["max_tokens"] = predict if isinstance(predict, int) and predict > 0 else None  # Ollama: -1 = no limit
        kwargs["messages"] = [{"role": m.role, "content": m.content} for m in messages]
        loop = asyncio.get_running_loop()
        if slot.runner is None:
            raise StreamBroken(f"model '{slot.model_id}' was unloaded before its reply began", model=slot.model_id)
        generation = Generation(slot.runner, kwargs, loop)
        future = self._executor.submit(generation.run)
        # Registered before wrap_future's own callback, so the slot is free again
        # before anyone awaiting the job (or the done chunk) resumes.
        future.add_done_callback(lambda _: call_soon(loop, self._release, slot))
        slot.stop, slot.job = generation.stop, asyncio.wrap_future(future)
        generation.job = slot.job
        return generation

    @staticmethod
    async def _relay(model_id: str, generation: Generation, load_ms: float) -> AsyncGenerator[ChatChunk, None]:
        finish = None
        while True:
            item = await generation.queue.get()
            if isinstance(item, Finished):
                if generation.job is not None:
                    await asyncio.shield(generation.job)  # the model is released before the reply ends
                yield ChatChunk(
                    done=True,
                    tokens=item.completion_tokens,
                    prompt_tokens=item.prompt_tokens,
                    load_ms=load_ms,
                    done_reason=finish or "stop",
                )
                return
            if isinstance(item, ValueError) and CONTEXT_EXCEEDED in str(item):  # even fitted, the newest message is too long
                raise PromptTooLong(f"the conversation is longer than model '{model_id}''s context ({item})",
                                    model=model_id) from item
            if isinstance(item, Exception):
                raise StreamBroken(f"model '{model_id}' stopped the reply: {item}", model=model_id) from item
            choice = item["choices"][0]
            finish = choice.get("finish_reason") or finish
            text = choice.get("delta", {}).get("content")
            if text:
                yield ChatChunk(text=text)

    async def aclose(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        jobs = [slot.job for slot in self._slots.values() if slot.job is not None]
        for slot in self._slots.values():
            if slot.stop is not None:
                slot.stop.set()
        await asyncio.gather(*(asyncio.shield(job) for job in jobs), return_exceptions=True)
        for slot in self._slots.values():
            await self._free(slot)
        self._executor.shutdown(wait=False)
        self.snapshot = self._snapshot()

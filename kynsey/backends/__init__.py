"""Model servers behind a single interface: Ollama, OpenAI-compatible, and in-process llama.cpp."""

from kynsey.backends.base import Backend, BackendSnapshot, ChatChunk, ChatMessage, HostSnapshot, ModelState
from kynsey.backends.registry import build_backends

__all__ = ["Backend", "BackendSnapshot", "ChatChunk", "ChatMessage", "HostSnapshot", "ModelState", "build_backends"]

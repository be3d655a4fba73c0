"""Chat with zero data loss (SPEC F5, F6): conversations, streamed replies, fallback."""

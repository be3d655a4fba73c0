"""Live tier status (SPEC F3), circuit breaking (F6) and warm-up (N1)."""

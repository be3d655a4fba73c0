"""Users, plans, API tokens and browser sessions (SPEC F7)."""

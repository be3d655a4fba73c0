"""Tier switching (SPEC F4): who may use which tier, the switch itself, and the tier listing."""

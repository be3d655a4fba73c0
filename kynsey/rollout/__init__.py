"""Rolling the switching feature out and back (SPEC F10, F12).

``flags``: the ``model_switching`` flag (off, on, or a sticky percentage plus
an allowlist), stored in the database and cached per instance for a few
seconds. ``guard``: the automatic rollback that turns the flag off when
switches fail or replies slow down. ``dashboard``: the admin page's figures.
"""

from kynsey.rollout.flags import FLAG, Flags, FlagState

__all__ = ["FLAG", "FlagState", "Flags"]

"""A conversation as a tree of messages, and the one path of it that is shown (SPEC F18).

Each message has a parent: the message it answers or follows (none for the
first). Versions of a message are its siblings (same parent, same role), in the
order they were written: editing a question adds a user message beside it,
regenerating a reply adds an assistant message beside it. Nothing is replaced,
so no edit loses text. The conversation remembers the leaf it shows; the path
from the root to that leaf is the conversation as the page shows it and the
history the next turn sends.

These functions take any rows with ``id``, ``parent_id``, ``role`` and ``seq``
(ORM messages or Core rows), ordered by ``seq``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar


class Node(Protocol):
    id: str
    parent_id: str | None
    role: str
    seq: int


N = TypeVar("N", bound=Node)  # the functions hand back the rows they were given, typed as given


def children(rows: Sequence[N]) -> dict[str | None, list[N]]:
    """Each message's children (roots under None), oldest first."""
    kids: dict[str | None, list[N]] = {}
    for row in rows:
        kids.setdefault(row.parent_id, []).append(row)
    return kids


def path_to(leaf: N | None, by_id: dict[str, N]) -> list[N]:
    """The messages from the root down to ``leaf``."""
    path, seen = [], set()
    node = leaf
    while node is not None and node.id not in seen:  # a cycle cannot be built, but must not hang a read
        seen.add(node.id)
        path.append(node)
        node = by_id.get(node.parent_id) if node.parent_id else None
    path.reverse()
    return path


def deepest(node: N, kids: dict[str | None, list[N]]) -> N:
    """The leaf reached from ``node`` by following the newest child at each step."""
    seen = {node.id}
    while kids.get(node.id):
        node = kids[node.id][-1]
        if node.id in seen:
            break
        seen.add(node.id)
    return node


def shown_path(rows: Sequence[N], leaf_id: str | None) -> list[N]:
    """The path shown: to ``leaf_id``, or (none stored, or it is gone) to the newest branch's end."""
    by_id = {row.id: row for row in rows}
    leaf = by_id.get(leaf_id) if leaf_id else None
    if leaf is None and rows:
        leaf = deepest(rows[-1], children(rows))
    return path_to(leaf, by_id)


def siblings(node: N, kids: dict[str | None, list[N]]) -> list[N]:
    """The versions of ``node``, itself included, oldest first."""
    return [k for k in kids.get(node.parent_id, []) if k.role == node.role]


def version_info(node: N, kids: dict[str | None, list[N]]) -> dict[str, Any]:
    """What the page needs to show ``< 2/3 >`` and move between versions."""
    ids = [s.id for s in siblings(node, kids)]
    return {"parent_id": node.parent_id, "version": ids.index(node.id) + 1, "versions": len(ids), "sibling_ids": ids}

"""`kynsey serve` with Python's allocations traced, for ``bench/memory_bench.py``.

    python -m bench.traced_serve OUT.jsonl serve --port N

On SIGUSR1 it collects garbage and appends one JSON line to OUT.jsonl: the traced
heap (tracemalloc's own memory left out), the count of live objects, where the
heap grew most since the first line (the places allocated from, one frame each),
and the types whose live objects grew most in number since then (what is kept,
where the places say only who made it).
The signal is handled on the event loop's thread, between two steps of whatever
runs: send it when Kynsey is idle. Tracing slows Kynsey down; its figures are the
memory bench's, never a speed.
"""

from __future__ import annotations

import gc
import json
import signal
import sys
import tracemalloc
from collections import Counter

TOP = 8


def main() -> None:
    out, args = sys.argv[1], sys.argv[2:]
    tracemalloc.start(1)
    first: list[tracemalloc.Snapshot] = []
    first_types: list[Counter[str]] = []

    def dump(*_) -> None:
        gc.collect()
        live = gc.get_objects()
        objects = len(live)  # before the snapshot, which is objects too
        types = Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in live)
        del live
        snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__),
                                                              tracemalloc.Filter(False, __file__)])
        # What Kynsey holds: what this wrapper keeps for the comparisons (the first snapshot, tracemalloc's;
        # the first count of types, this file's) is left out here.
        heap = sum(stat.size for stat in snapshot.statistics("filename"))
        grew = snapshot.compare_to(first[0], "lineno")[:TOP] if first else []
        more = (types - first_types[0]).most_common(TOP) if first_types else []
        if not first:
            first.append(snapshot)
            first_types.append(types)
        line = {"heap": heap, "objects": objects,
                "grew": [f"{s.traceback[0].filename}:{s.traceback[0].lineno} {s.size_diff:+,} B, {s.count_diff:+,}"
                         for s in grew if s.size_diff > 0],
                "types": [f"{name} {count:+,}" for name, count in more]}
        with open(out, "a") as handle:
            handle.write(json.dumps(line) + "\n")

    signal.signal(signal.SIGUSR1, dump)
    from kynsey.cli import app

    app(args, prog_name="kynsey")


if __name__ == "__main__":
    main()

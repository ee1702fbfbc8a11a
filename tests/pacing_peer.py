"""Another process pacing a key, for ``tests/test_pacing.py`` (as a second worker process would).

    python -m tests.pacing_peer reserve KEY COUNT INTERVAL [sleep]   → a JSON list of [slot ISO time, wait]
      (``sleep``: wait for each slot before reserving the next, as a worker posting would)
    python -m tests.pacing_peer defer KEY SECONDS            → "deferred"

It prints ``ready`` once Django is set up, then waits for a line on stdin before it acts, so
that the test starts its peers (and its own threads) at the same moment.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(argv: list[str]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    from outbound.pacing import pace_defer, pace_reserve

    print("ready", flush=True)
    sys.stdin.readline()
    action, key = argv[0], argv[1]
    if action == "reserve":
        count, interval = int(argv[2]), float(argv[3])
        slots = []
        for _ in range(count):
            slots.append(pace_reserve(key=key, interval=interval, max_wait=3600.0))
            if argv[4:] == ["sleep"]:
                time.sleep(slots[-1].wait)
        print(json.dumps([[slot.at.isoformat(), slot.wait] for slot in slots]), flush=True)
    elif action == "defer":
        pace_defer(key=key, seconds=float(argv[2]))
        print("deferred", flush=True)
    else:
        raise SystemExit(f"unknown action {action!r}")


if __name__ == "__main__":
    main(sys.argv[1:])

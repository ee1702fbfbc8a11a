"""Run both stand-ins for a local demo or a benchmark: `python -m standins [options]`.

Prints one JSON line `{"botpress_url": ..., "zendesk_url": ...}` once both listen, then serves until
SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from .botpress import BotpressStandin
from .zendesk import ZendeskStandin


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m standins", description=__doc__.splitlines()[0])
    parser.add_argument("--botpress-port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--zendesk-port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--bot-id", default="bot_local")
    parser.add_argument("--bp-token", default="bp_local_token")
    parser.add_argument("--integration-id", default="intg_local")
    parser.add_argument("--zd-email", default="agent@example.com")
    parser.add_argument("--zd-token", default="zd_local_token")
    args = parser.parse_args(argv)

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())

    botpress = BotpressStandin(port=args.botpress_port)
    botpress.add_bot(bot_id=args.bot_id, token=args.bp_token, integration_id=args.integration_id)
    zendesk = ZendeskStandin(email=args.zd_email, api_token=args.zd_token, port=args.zendesk_port)
    with botpress, zendesk:
        print(json.dumps({"botpress_url": botpress.base_url, "zendesk_url": zendesk.base_url}), flush=True)
        while not stop.wait(0.5):
            pass
    print("stand-ins stopped", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()

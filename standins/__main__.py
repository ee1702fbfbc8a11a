"""Run the Botpress stand-in and a help desk's for a local demo or a benchmark: `python -m standins [options]`.

The help desk is any provider of ``providers.registry`` with a stand-in (``ProviderSpec.standin``,
a server class taking ``port`` and each of the spec's credential fields as keyword arguments).
Prints one JSON line `{"botpress_url": ..., "provider": kind, "provider_url": ..., "<kind>_url": ...}`
once both listen, then serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from providers.registry import provider_default, provider_spec, provider_specs
from providers.spec import import_path_load

from .botpress import BotpressStandin


def _dest(kind: str, name: str) -> str:
    return f"{kind}_{name}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m standins", description=__doc__.splitlines()[0])
    specs = [spec for spec in provider_specs() if spec.standin]
    parser.add_argument("--provider", default=provider_default(), choices=[spec.kind for spec in specs])
    parser.add_argument("--botpress-port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--provider-port", type=int, default=None, help="0 picks a free port")
    parser.add_argument("--bot-id", default="bot_local")
    parser.add_argument("--bp-token", default="bp_local_token")
    parser.add_argument("--integration-id", default="intg_local")
    for spec in specs:
        parser.add_argument(f"--{spec.kind}-port", dest=_dest(spec.kind, "port"), type=int, default=None)
        for credential in spec.credential_fields:
            parser.add_argument(
                f"--{spec.kind}-{credential.name}".replace("_", "-"),
                dest=_dest(spec.kind, credential.name),
                default=None,
                help=f"{spec.label}: {credential.label} the stand-in accepts (default: its own)",
            )
    args = parser.parse_args(argv)
    spec = provider_spec(args.provider)
    port = next((p for p in (args.provider_port, getattr(args, _dest(spec.kind, "port"))) if p is not None), 0)
    credentials = {
        f.name: getattr(args, _dest(spec.kind, f.name))
        for f in spec.credential_fields
        if getattr(args, _dest(spec.kind, f.name)) is not None
    }

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())

    botpress = BotpressStandin(port=args.botpress_port)
    botpress.add_bot(bot_id=args.bot_id, token=args.bp_token, integration_id=args.integration_id)
    helpdesk = import_path_load(spec.standin)(port=port, **credentials)
    with botpress, helpdesk:
        urls = {"provider_url": helpdesk.base_url, f"{spec.kind}_url": helpdesk.base_url}
        print(json.dumps({"botpress_url": botpress.base_url, "provider": spec.kind, **urls}), flush=True)
        while not stop.wait(0.5):
            pass
    print("stand-ins stopped", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()

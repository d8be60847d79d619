"""The serving commands: ``serve`` and ``smoke``."""

from __future__ import annotations

import argparse

from slipway.commands.common import config_of, progress, registry_of


def cmd_serve(args: argparse.Namespace) -> int:
    from slipway.manifests import manifest_path
    from slipway.serve.server import start_server, stop_server

    path = manifest_path(args.environment, args.environments)
    if args.stop:
        stopped = stop_server(args.environment)
        print(
            f"stopped {args.environment} (pid {stopped['pid']})"
            if stopped
            else f"{args.environment} is not being served"
        )
        return 0
    config = config_of(args)
    running = start_server(
        config,
        registry_of(),
        path,
        args.config,
        args.port,
        args.timeout,
        progress,
        workers=args.workers,
    )
    workers = f", {args.workers} workers" if args.workers > 1 else ""
    print(
        f"{args.environment} v{running['version']} ready at {running['url']} "
        f"(pid {running['pid']}{workers})"
    )
    return 0


def cmd_smoke(args: argparse.Namespace) -> int:
    from slipway.fsutil import write_json
    from slipway.propose.contract import read_dataset
    from slipway.serve.smoke import records_from_frame, smoke

    config = config_of(args)
    frame = read_dataset(config.path(config.data.eval)).head(args.rows)
    records = records_from_frame(frame, config)
    document = smoke(args.url, records, args.max_p95_ms, id_column=config.data.id_column)
    write_json(args.out / "smoke.json", document)
    for check in document["checks"]:
        print(f"{'pass' if check['passed'] else 'FAIL':>5}  {check['check']}: {check['detail']}")
    print("smoke tests passed" if document["passed"] else "smoke tests failed")
    return 0 if document["passed"] else 1

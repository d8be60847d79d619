"""``slipway`` command line: parse arguments, dispatch, map errors to exit codes.

Exit codes: 0 success, 1 a check failed (data validation or a gate), 2 usage, configuration or
environment error. Every message says what to do next.
"""

from __future__ import annotations

import json
import logging
import os
import sys

from slipway.arguments import build_parser
from slipway.commands.drift import cmd_drift, cmd_retrain_pr
from slipway.commands.promote import (
    cmd_canary_report,
    cmd_deploy,
    cmd_history,
    cmd_promote,
    cmd_render,
    cmd_rollback,
    cmd_status,
)
from slipway.commands.propose import (
    cmd_demo,
    cmd_gate,
    cmd_lock,
    cmd_package,
    cmd_pr,
    cmd_report,
    cmd_train,
    cmd_validate,
)
from slipway.commands.serve import (
    cmd_serve,
    cmd_smoke,
)
from slipway.errors import SlipwayError

COMMANDS = {
    "validate": cmd_validate,
    "lock": cmd_lock,
    "train": cmd_train,
    "gate": cmd_gate,
    "package": cmd_package,
    "serve": cmd_serve,
    "smoke": cmd_smoke,
    "report": cmd_report,
    "promote": cmd_promote,
    "deploy": cmd_deploy,
    "rollback": cmd_rollback,
    "render": cmd_render,
    "canary-report": cmd_canary_report,
    "history": cmd_history,
    "status": cmd_status,
    "drift": cmd_drift,
    "retrain-pr": cmd_retrain_pr,
    "pr": cmd_pr,
    "demo": cmd_demo,
}


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except SlipwayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if os.environ.get("GITHUB_ACTIONS") == "true":
            print(f"::error::{json.dumps(exc.message)[1:-1]}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """The ``slipway`` console script: :func:`main`, then exit at once.

    Every output is written and every child process stopped when ``main`` returns, so the
    interpreter's teardown of MLflow, scikit-learn and BentoML (up to a second a command)
    buys nothing.
    """
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()

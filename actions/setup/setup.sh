#!/usr/bin/env bash
# The setup action's two steps: `locate` names the environment, `install` makes it ready.
#
# The environment holds Slipway's pinned dependencies and is keyed by the hash of pyproject.toml,
# so it is reused (from the Actions cache, or left on a self-hosted runner) until the pins change.
# Slipway itself is installed in editable mode from the repository this action lives in, which
# is the checked-out tree in Slipway's own workflows and OWNER/REPO@REF when used from elsewhere.
set -euo pipefail

root="$(cd "$GITHUB_ACTION_PATH/../.." && pwd)"
python="python3.11"
command -v "$python" >/dev/null || python="python3"

case "${1:-}" in
locate)
  version="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  if [[ "$version" != "3.11" ]]; then
    echo "::error::Slipway needs Python 3.11 but found $version; set the python-version input to 3.11"
    exit 2
  fi
  digest="$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
  key="slipway-venv-${RUNNER_OS:-Linux}-${RUNNER_ARCH:-X64}-py$version-$digest"
  venv="${VENV:-${RUNNER_TOOL_CACHE:-$HOME/.cache}/slipway/venv-$digest}"
  echo "venv=$venv" >>"$GITHUB_OUTPUT"
  echo "key=$key" >>"$GITHUB_OUTPUT"
  ;;
install)
  stamp="$VENV/.slipway-ready"
  started=$SECONDS
  if [[ -f "$stamp" && -x "$VENV/bin/python" ]]; then
    ready=true
    echo "Slipway's environment is ready in $VENV"
  else
    ready=false
    echo "::group::Installing Slipway's dependencies into $VENV"
    rm -rf "$VENV"
    "$python" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip 'setuptools>=68' wheel
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root"
    touch "$stamp"
    echo "::endgroup::"
    echo "Slipway's environment size: $(du -sm "$VENV" | cut -f1) MB"
  fi
  # Point the editable install at this checkout (a reused environment may know another one).
  # For Slipway's src layout the editable install is one .pth line naming the source directory;
  # rewriting it is what pip would do, in milliseconds instead of seconds.
  pth=("$VENV"/lib/python*/site-packages/__editable__.slipway-*.pth)
  if [[ -f "${pth[0]}" && "$(wc -l <"${pth[0]}")" -le 1 && "$(cat "${pth[0]}")" == /* ]]; then
    printf '%s\n' "$root/src" >"${pth[0]}"
  else
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
      --no-build-isolation -e "$root"
  fi
  # Compile Slipway's sources once here, so that no later step's process compiles them again
  # (Python writes no bytecode where PYTHONDONTWRITEBYTECODE is set).
  "$VENV/bin/python" -m compileall -q -j 0 "$root/src/slipway" >/dev/null
  echo "$VENV/bin" >>"$GITHUB_PATH"
  {
    echo "MLFLOW_DISABLE_TELEMETRY=true"
    echo "BENTOML_DO_NOT_TRACK=true"
    echo "DO_NOT_TRACK=1"
  } >>"$GITHUB_ENV"
  echo "ready=$ready" >>"$GITHUB_OUTPUT"
  version="$("$VENV/bin/python" -c 'import slipway; print(slipway.__version__)')"
  echo "Slipway $version from $root set up in $((SECONDS - started)) s (ready: $ready)"
  ;;
*)
  echo "usage: setup.sh locate|install" >&2
  exit 2
  ;;
esac

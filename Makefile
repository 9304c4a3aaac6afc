# One command each: `make run` starts the service on the example policies,
# `make test` installs everything on a fresh machine and passes the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LISTEN ?= 127.0.0.1:50051

.PHONY: install run test lint proto proto-check bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/pdp serve --policies policies --listen $(LISTEN)

test: $(STAMP)
	$(MAKE) --no-print-directory proto-check
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check pdp tests benchmarks
	$(BIN)/mypy pdp

# Regenerate the Python protobuf and gRPC code from proto/ (into pdp/v1/).
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. \
		--grpc_python_out=. $$(find proto -name '*.proto' | sort)

# Fails when the committed generated code differs from what proto/ generates.
proto-check: $(STAMP)
	@if [ -n "$$(find proto -name '*.proto')" ]; then \
		tmp=$$(mktemp -d); \
		$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=$$tmp --pyi_out=$$tmp \
			--grpc_python_out=$$tmp $$(find proto -name '*.proto' | sort) && \
		diff -r -x __pycache__ -x __init__.py $$tmp/pdp/v1 pdp/v1 \
			|| { echo "generated code is stale: run 'make proto'"; exit 1; }; \
		rm -rf $$tmp; \
	fi

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

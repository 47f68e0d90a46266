# Tollgate — two commands: `make run` and `make test` (see README).
SHELL := /bin/bash
ROOT := $(CURDIR)
export TOLLGATE_DATA_DIR ?= $(ROOT)/.data
SWIFT_BUILD_FLAGS ?=
BIN = $(shell swift build $(SWIFT_BUILD_FLAGS) --show-bin-path)/tollgate

.PHONY: run test build deps db-start db-stop schemathesis clean-data

## Build, start a private PostgreSQL (unless DATABASE_URL is set), migrate, seed the demo and serve.
run: deps
	@swift build $(SWIFT_BUILD_FLAGS) --product tollgate
	@if [ -z "$$DATABASE_URL" ]; then scripts/pg.sh start tollgate; fi
	@export DATABASE_URL="$${DATABASE_URL:-$$(scripts/pg.sh url tollgate)}"; \
	  export GATEWAY_TLS_ADDRESS="$${GATEWAY_TLS_ADDRESS-127.0.0.1:8443}" PORTAL_TLS_ADDRESS="$${PORTAL_TLS_ADDRESS-127.0.0.1:8444}"; \
	  "$(BIN)" migrate && "$(BIN)" seed-demo && "$(BIN)" dev-certs --name demo.localhost && \
	  portal="$${PORTAL_ADDRESS:-127.0.0.1:8080}"; gateway="$${GATEWAY_ADDRESS:-127.0.0.1:8000}"; \
	  echo; echo "Portal:   http://$$portal/t/demo/   (platform console: http://$$portal/platform/)"; \
	  if [ -n "$$PORTAL_TLS_ADDRESS" ]; then echo "Portal (TLS): https://localhost:$${PORTAL_TLS_ADDRESS##*:}/t/demo/"; fi; \
	  echo "Gateway:  http://$$gateway/"; \
	  if [ -n "$$GATEWAY_TLS_ADDRESS" ]; then \
	    echo "Gateway (TLS): https://$$GATEWAY_TLS_ADDRESS/   e.g. curl --cacert $${TOLLGATE_TLS_DIR:-$(TOLLGATE_DATA_DIR)/tls}/ca.pem https://localhost:$${GATEWAY_TLS_ADDRESS##*:}/healthz"; \
	  fi; \
	  echo "API docs: http://$$portal/t/demo/api/v1/openapi.json"; \
	  echo "Demo upstream (Echo API): http://127.0.0.1:9100/"; \
	  echo "Demo gRPC API (Greeter): demo.Greeter/SayHello at 127.0.0.1:$${gateway##*:} path /t/demo/greeter/v1/demo.Greeter/SayHello over HTTP/2"; \
	  echo "  ...or with JSON (its descriptor set is seeded): curl -X POST http://$$gateway/t/demo/greeter/v1/demo.Greeter/SayHello -H 'X-API-Key: <demo-app api_key>' -d '{\"name\":\"Ada\"}'"; echo; \
	  "$(BIN)" demo-upstream & upstream=$$!; trap 'kill $$upstream 2>/dev/null' EXIT; \
	  "$(BIN)" serve

## The whole test suite against a private PostgreSQL: swift test, then schemathesis on the live server.
test: deps
	@scripts/test.sh $(SWIFT_BUILD_FLAGS)

build:
	swift build $(SWIFT_BUILD_FLAGS)

deps:
	@scripts/deps.sh

db-start:
	@scripts/pg.sh start tollgate

db-stop:
	@scripts/pg.sh stop

schemathesis:
	@scripts/pg.sh start tollgate_schemathesis
	@scripts/schemathesis.sh

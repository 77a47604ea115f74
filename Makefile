# Every Go module in the repository: the root and the nested ones.
MODULES := $(shell find . -name go.mod -not -path './.git/*' -exec dirname {} \; | sort)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: test lint fuzz demo

# test runs every module's tests with the race detector. Tests that need
# redis-server or chromium skip loudly when it is missing, and fail instead
# when CI=true.
test:
	@set -e; for m in $(MODULES); do \
		echo "== go test -race $$m"; \
		(cd $$m && go test -race -count=1 -timeout 8m ./...); \
	done

# fuzz runs each fuzz target of the root module for FUZZTIME (seed corpora
# in testdata/fuzz run with every go test too). Minimizing a new input is
# capped: FuzzInboundFrame does round trips on a real connection, and the
# default 60 s of minimizing would eat the whole budget.
FUZZTIME ?= 10s
fuzz:
	@set -e; for f in $$(go test -list '^Fuzz' . | grep '^Fuzz'); do \
		echo "== go test -fuzz $$f"; \
		go test -run '^$$' -fuzz "^$$f$$" -fuzztime=$(FUZZTIME) -fuzzminimizetime=200x . ; \
	done

# lint checks formatting, go vet and staticcheck in every module.
lint:
	@set -e; out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	@set -e; for m in $(MODULES); do \
		echo "== vet + staticcheck $$m"; \
		(cd $$m && go vet ./... && go run $(STATICCHECK) ./...); \
	done

demo:
	go run ./examples/customers

# Every Go module in the repository: the root and the nested ones.
#
# The committed go.work puts them all in one workspace, so one go command
# covers every module, each nested module built against the root in this
# working tree. Published nested modules (redisbroker, pgbroker) still require
# a real version of the root in their go.mod, because that is what users get
# from a module proxy, where replace directives of dependencies are ignored;
# go.work maps that version to this tree until it is tagged. At a release, the
# version changes in the nested go.mod files and go.work together, and
# release/'s install check follows them: see RELEASING.md.
MODULES := $(shell find . -name go.mod -not -path './.git/*' -exec dirname {} \; | sort)
PACKAGES := $(addsuffix /...,$(MODULES))
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
GOTESTSUM := gotest.tools/gotestsum@v1.13.0

.PHONY: test lint fuzz demo

# test runs every module's tests with the race detector, release/'s install
# check included, through gotestsum: a line per package, then every skipped
# test with its reason and a summary line counting tests, failures and skips.
# Tests that need redis-server or chromium skip when it is missing, and fail
# instead when CI=true. The timeout applies to each package's test binary.
test:
	go run $(GOTESTSUM) --format pkgname --format-icons text -- \
		-race -count=1 -timeout 8m $(PACKAGES)

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
	go vet $(PACKAGES)
	go run $(STATICCHECK) $(PACKAGES)

demo:
	go run ./examples/customers

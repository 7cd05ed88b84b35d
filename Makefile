# gigapath — the one place that says how to build, generate, test and demo.
GO         ?= go
CLANG      ?= clang-14
BPF_CFLAGS ?= -O2 -g -Wall -Werror
BIN        := bin/gigapath
# The revision `gigapath --version` and `gigapath status` report when the
# Go toolchain recorded none (GOFLAGS=-buildvcs=false, or no git).
REVISION   ?= $(shell git describe --always --dirty 2>/dev/null || echo unknown)
# Fuzz targets run by `make test` for a bounded number of executions each.
# An execution count, not a duration: with a duration Go 1.26's fuzz
# coordinator can fail a target with a bare "context deadline exceeded" when
# the time runs out under load (golang/go#75804, fixed in Go 1.27).
FUZZTIME   ?= 100000x
# The public libraries (docs/architecture.md, "Rules") and the platforms
# they build for besides the host (docs/pathmgr.md, docs/ebpf.md): both on
# 64- and 32-bit Linux, macOS and FreeBSD; pathmgr
# also on big-endian Linux and Windows, where the ebpf packages do not build
# (bpf2go's objects are little-endian; cilium/ebpf's Windows port has other
# attach calls).
LIBS              := ./pathmgr/... ./ebpf/...
LIB_PLATFORMS     := linux/arm64 linux/arm darwin/arm64 freebsd/amd64
PATHMGR_PLATFORMS := linux/s390x windows/amd64

export CLANG BPF_CFLAGS

.PHONY: all deps build generate lint crossbuild test unit fuzz demo bench vmtest vmtest-systemd sched-kernel vmtest-sched deb vmtest-deb clean

all: build

# Debian packages the tests and the demo use (idempotent; root).
deps:
	@.ci/install-deps

build:
	$(GO) build -ldflags "-X github.com/gigapath/gigapath/internal/buildinfo.revision=$(REVISION)" -o $(BIN) ./cmd/gigapath

# Regenerates the eBPF objects (installs the pinned clang and libbpf's
# headers if missing); the generated *_bpfel.go/*.o are committed so
# `go build` needs neither.
generate:
	@.ci/install-deps generate
	$(GO) generate ./ebpf/...

# gofmt, go vet, staticcheck (a go tool pinned in go.mod), and the
# dependency rules: the binary does not link testing, the libraries import
# nothing under internal/ and no Prometheus on any of their platforms.
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '_bpfel.go$$')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...
	GO=$(GO) .ci/check-deps $(LIB_PLATFORMS) $(PATHMGR_PLATFORMS)

# The libraries build on every platform their docs claim.
crossbuild:
	@set -e; for p in $(LIB_PLATFORMS); do \
	  echo "build $(LIBS) for $$p"; GOOS=$${p%/*} GOARCH=$${p#*/} CGO_ENABLED=0 $(GO) build $(LIBS); \
	done; for p in $(PATHMGR_PLATFORMS); do \
	  echo "build ./pathmgr/... for $$p"; GOOS=$${p%/*} GOARCH=$${p#*/} CGO_ENABLED=0 $(GO) build ./pathmgr/...; \
	done

# The whole suite: unit tests, integration tests against the real kernel in
# fresh namespaces (needs root), race detector, bounded fuzzing.
# kubectl-validate (pinned in .ci/k8s/go.mod, its own module) is built
# first, so its few minutes of compiling are not spent inside a test's
# timeout; TestKubernetesManifests runs it from the build cache.
test: deps lint build crossbuild
	$(GO) tool -modfile=.ci/k8s/go.mod -n kubectl-validate >/dev/null
	$(GO) test -race -count=1 -timeout 20m ./...
	$(MAKE) fuzz

# Unit tests only: no root, no kernel feature, no namespace; quick to run
# before a commit. Integration tests are the ones named TestIntegration*
# (the real kernel, as root); `make test` runs them with the rest.
unit:
	$(GO) test -race -count=1 -skip '^TestIntegration' ./...

fuzz:
	@set -e; grep -rl --include='*_test.go' '^func Fuzz' . | while read -r f; do \
	  for spec in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$$f" | sed 's/^func //'); do \
	    echo "$$(dirname "$$f") $$spec"; \
	  done; \
	done | sort -u | while read -r pkg spec; do \
	  echo "fuzz $$pkg $$spec ($(FUZZTIME))"; \
	  $(GO) test -run='^$$' -fuzz="^$$spec\$$" -fuzztime=$(FUZZTIME) -fuzzminimizetime=5s $$pkg </dev/null || exit 1; \
	done

bench:
	$(GO) test -run='^$$' -bench=. -benchmem -count=1 ./...

# The kernel matrix: installs virtme-ng and Debian's 6.1, 6.12 and newest
# 7.x kernels (.ci/vmtest-setup, idempotent) and the scheduler kernel
# (.ci/sched-kernel), runs gigapath check and the
# integration tests on the host and inside each kernel, and regenerates the
# table in docs/kernels.md from the results (docs/kernels/*.json).
vmtest:
	.ci/vmtest --out docs/kernels

# A kernel that registers BPF MPTCP schedulers (none released does):
# Debian's newest linux-source-7.x + ebpf/kernel/mptcp-bpf-sched.patch,
# configured from ebpf/kernel/sched.config, cached under
# /var/cache/gigapath-kernel by a hash of its inputs (a second run with the
# same inputs builds nothing). The last line printed is the bzImage.
sched-kernel:
	@.ci/sched-kernel

# The five BPF schedulers proven on the wire in that kernel under
# virtme-ng (builds it first if it is not cached); part of .ci/run.
vmtest-sched:
	.ci/vmtest --quick --out bin/vmtest/sched sched

# The systemd unit (docs/deploy/gigapath.service) under systemd as PID 1 in
# a 6.12 guest (this host has no running systemd); part of .ci/run.
vmtest-systemd:
	.ci/vmtest-systemd 6.12

# The Debian package: dist/gigapath_<version>_<arch>.deb (version from git
# describe), built with nfpm (a Go tool pinned in .ci/deb/go.mod) and
# checked with lintian (.ci/deb/build; docs/deploy.md).
deb:
	.ci/deb/build

# The package in the systemd guest: dpkg -i, systemctl start/reload/stop,
# upgrade in place, dpkg -r and -P (.ci/deb-guest); part of .ci/run.
vmtest-deb: deb
	.ci/vmtest-systemd --deb $(wildcard dist/gigapath_*.deb) 6.12

demo: deps build
	./$(BIN) demo

clean:
	rm -rf bin dist

# layerlens - build, test, run.
#
#   make            build build/layerlens (installs missing Debian packages first)
#   make test       unit + conformance tests (reads ../shared, see README)
#   make asan       the whole test suite under AddressSanitizer + UBSan
#   make run        start the server (see README)
#   make bench      benchmarks (not part of make test)
#   make stress     load and fault scenarios against the server (stress-quick: short)
#   make clean
#
# Every src/*.c except src/main.c goes into build/liblayerlens.a; every
# tests/test_*.c becomes one test program linked against it.

BUILD    ?= build
CC       ?= cc
ARCHFLAGS ?= -march=native
OPT      ?= -O2
SAN      ?=
PKGS     := openblas jansson libpcre2-8 libutf8proc libmicrohttpd libcrypto
TESTPKGS := cmocka

# Debian packages the build and the tests need (installed by `make deps`).
DEB_PKGS := build-essential pkg-config libopenblas-dev libjansson-dev \
            libpcre2-dev libutf8proc-dev libmicrohttpd-dev libcmocka-dev libssl-dev \
            curl libcurl4-openssl-dev libxml2-utils

CFLAGS   ?= $(OPT) -g $(ARCHFLAGS)
CFLAGS   += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wno-unused-parameter -Wno-format-truncation \
            -Iinclude $(shell pkg-config --cflags $(PKGS) 2>/dev/null) $(SAN)
LDFLAGS  += $(SAN)
LDLIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread -lmvec -lm
TESTLIBS = $(shell pkg-config --libs $(TESTPKGS) 2>/dev/null)

SRCS     := $(filter-out src/main.c,$(wildcard src/*.c))
OBJS     := $(SRCS:src/%.c=$(BUILD)/obj/%.o)
TESTSRCS := $(wildcard tests/test_*.c)
TESTBINS := $(TESTSRCS:tests/%.c=$(BUILD)/tests/%)
TESTUTIL := $(BUILD)/obj/tests/testutil.o
DEPS_STAMP := $(BUILD)/.deps-ok

.PHONY: all deps test asan run bench clean
# keep the test objects between runs (they are intermediate files to make)
.SECONDARY:
all: $(BUILD)/layerlens

# Installs the Debian packages when one is missing (needs root, as on the
# build machines); the stamp keeps later builds from asking dpkg again.
deps: $(DEPS_STAMP)
$(DEPS_STAMP):
	@mkdir -p $(BUILD)
	@missing=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
	@touch $@

$(BUILD)/obj/%.o: src/%.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/obj/tests/%.o: tests/%.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests -MMD -MP -c $< -o $@

$(BUILD)/liblayerlens.a: $(OBJS)
	ar rcs $@ $^

$(BUILD)/layerlens: $(BUILD)/obj/main.o $(BUILD)/liblayerlens.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(TESTUTIL) $(BUILD)/liblayerlens.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(TESTLIBS)

test: $(BUILD)/layerlens $(TESTBINS)
	@BUILD=$(BUILD) tests/run.sh $(TESTBINS)

# The same suite with AddressSanitizer + UndefinedBehaviorSanitizer, in its
# own build directory so it never mixes objects with the normal build.
asan:
	$(MAKE) BUILD=build-asan OPT=-O1 \
	  SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" test

run: $(BUILD)/layerlens
	@BUILD=$(BUILD) scripts/run.sh

# ---- benchmark (make bench only; make test never builds or runs it) ----
# bench/llbench.c: the engine without HTTP (workload 5, peers' token ids);
# bench/llload.c: the HTTP load generator (libcurl).  See docs/benchmark.md.
BENCHBINS := $(BUILD)/bench/llbench $(BUILD)/bench/llload

$(BUILD)/bench/llbench: bench/llbench.c $(BUILD)/liblayerlens.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/liblayerlens.a $(LDLIBS)

$(BUILD)/bench/llload: bench/llload.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(shell pkg-config --libs libcurl 2>/dev/null) -lpthread -lm

bench: $(BUILD)/layerlens $(BENCHBINS)
	@BUILD=$(BUILD) scripts/bench.sh
# ---- end of benchmark ----

clean:
	rm -rf build build-asan build-tsan

-include $(OBJS:.o=.d) $(BUILD)/obj/main.d $(TESTSRCS:tests/%.c=$(BUILD)/obj/tests/%.d) $(TESTUTIL:.o=.d)

# ------------------------------------------------------------------------
# Fuzzing and memory checking.
#
#   make fuzz       builds every tests/fuzz/fuzz_*.c as a libFuzzer target
#                   (clang, ASan + UBSan) in build-fuzz/ and runs each for
#                   FUZZ_SECONDS (scripts/fuzz.sh); seeds: tests/fuzz/corpus/
#   make memcheck   the unit test programs under valgrind (scripts/memcheck.sh),
#                   built in build-memcheck/ for the baseline x86-64 ISA that
#                   valgrind decodes (no -march=native: no AVX-512)

FUZZ_BUILD   := build-fuzz
FUZZ_CC      := clang
FUZZ_SECONDS ?= 60
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all \
                -fno-omit-frame-pointer -Wno-unknown-warning-option
FUZZ_SRCS    := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS    := $(FUZZ_SRCS:tests/fuzz/%.c=$(FUZZ_BUILD)/fuzz/%)
MEMCHECK_BUILD := build-memcheck
# clang + libFuzzer runtime for `make fuzz`, valgrind for `make memcheck`
DEB_PKGS     += clang libclang-rt-14-dev valgrind

.PHONY: fuzz fuzz-build memcheck FORCE
FORCE:

fuzz: fuzz-build
	@FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_BUILD=$(FUZZ_BUILD) scripts/fuzz.sh $(FUZZ_BINS)

fuzz-build: $(FUZZ_BINS)

# The library with coverage instrumentation but without libFuzzer's main,
# through the ordinary rules in a build directory of its own.
# (Only in the outer make: inside, BUILD is build-fuzz and the ordinary
# $(BUILD)/liblayerlens.a rule applies.)
ifneq ($(BUILD),$(FUZZ_BUILD))
$(FUZZ_BUILD)/liblayerlens.a: FORCE
	@$(MAKE) --no-print-directory BUILD=$(FUZZ_BUILD) CC=$(FUZZ_CC) OPT=-O1 \
	  SAN="$(FUZZ_SAN) -fsanitize=fuzzer-no-link" $@
endif

$(FUZZ_BUILD)/fuzz/%: tests/fuzz/%.c tests/fuzz/fuzzutil.c tests/fuzz/fuzzutil.h \
                      $(FUZZ_BUILD)/liblayerlens.a
	@mkdir -p $(dir $@)
	$(FUZZ_CC) -O1 -g $(ARCHFLAGS) -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter \
	  -Iinclude -Isrc -Itests/fuzz $(shell pkg-config --cflags $(PKGS) 2>/dev/null) \
	  $(FUZZ_SAN) -fsanitize=fuzzer -o $@ $< tests/fuzz/fuzzutil.c \
	  $(FUZZ_BUILD)/liblayerlens.a $(LDLIBS)

memcheck:
	@$(MAKE) --no-print-directory BUILD=$(MEMCHECK_BUILD) ARCHFLAGS= \
	  $(TESTBINS:$(BUILD)/%=$(MEMCHECK_BUILD)/%)
	@scripts/memcheck.sh $(TESTBINS:$(BUILD)/%=$(MEMCHECK_BUILD)/%)

clean: clean-fuzz
.PHONY: clean-fuzz
clean-fuzz:
	rm -rf $(FUZZ_BUILD) $(MEMCHECK_BUILD)

# ------------------------------------------------------------------------
# Web page, API contract and deployment checks (Node.js; see docs/web.md
# and docs/deploy.md).
#
#   make test-web     the page in headless Chromium against the server
#   make test-api     lint api/openapi.yaml, validate real responses
#   make test-deploy  Dockerfile and deploy/ manifests, without a Docker engine
#
# `make test` runs all three.  Their npm packages come from the committed
# package-lock.json files (npm ci into each tests/<suite>/node_modules).

# Debian's Chromium for the browser test (Node.js and npm are on the build
# machines already; Debian's npm package would conflict with their nodejs).
DEB_PKGS += nodejs chromium
NODE_SUITES := web api deploy
# deploy checks the sources, not a build flavour: not again under `make asan`
ifneq ($(SAN),)
NODE_SUITES := web api
endif
NODE_TESTS := $(NODE_SUITES:%=test-%)

.PHONY: test-node $(NODE_TESTS)
test: test-node
test-node: $(NODE_TESTS)

# node_modules from the lockfile; npm ci writes node_modules/.package-lock.json
tests/%/node_modules/.package-lock.json: tests/%/package-lock.json
	cd tests/$* && npm ci --no-audit --no-fund --loglevel=error

$(NODE_TESTS): test-%: $(BUILD)/layerlens tests/%/node_modules/.package-lock.json
	@if [ "$*" = web ] && ! dpkg -s chromium >/dev/null 2>&1; then \
	  rm -f $(DEPS_STAMP); $(MAKE) --no-print-directory deps; fi
	cd tests/$* && BUILD=$(abspath $(BUILD)) node --test --test-reporter=spec

# src/web.c embeds these files with .incbin, which the compiler's
# dependency output does not see.
$(BUILD)/obj/web.o: $(wildcard web/*)

# ---- ThreadSanitizer: the concurrency tests (server load, batcher, metrics,
# evaluation jobs beside interactive requests)
TSAN_TESTS := test_gemm test_ops test_server_load test_server_batcher test_server_metrics test_eval_server
.PHONY: tsan
tsan:
	$(MAKE) BUILD=build-tsan OPT=-O1 SAN="-fsanitize=thread -fno-omit-frame-pointer" \
	  build-tsan/layerlens $(TSAN_TESTS:%=build-tsan/tests/%)
	@BUILD=build-tsan TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
	  tests/run.sh $(TSAN_TESTS:%=build-tsan/tests/%)

# ---- load and fault scenarios against the real server on loopback
# (tests/stress/stress.c; docs/http-api.md, "Load and fault tests")
#
#   make stress         every scenario at full length (about 5 minutes)
#   make stress-quick   the short version (under 2 minutes) that .ci/run calls
#
# The client-disconnect scenario runs again on the ASan build of the server.
STRESS   := $(BUILD)/stress/stress
ASAN_SAN := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
.PHONY: stress stress-quick stress-asan-server

$(STRESS): tests/stress/stress.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LDLIBS)

stress-asan-server:
	@$(MAKE) --no-print-directory BUILD=build-asan OPT=-O1 SAN="$(ASAN_SAN)" build-asan/layerlens

stress: $(BUILD)/layerlens $(STRESS) stress-asan-server
	$(STRESS) --binary $(BUILD)/layerlens --asan-binary build-asan/layerlens

stress-quick: $(BUILD)/layerlens $(STRESS) stress-asan-server
	STRESS_QUICK=1 $(STRESS) --binary $(BUILD)/layerlens --asan-binary build-asan/layerlens

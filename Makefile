# layerlens - build, test, run.
#
#   make            build build/layerlens (installs missing Debian packages first)
#   make test       unit + conformance tests (reads ../shared, see README)
#   make asan       the whole test suite under AddressSanitizer + UBSan
#   make run        start the server (see README)
#   make bench      benchmarks (not part of make test)
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
            curl

CFLAGS   ?= $(OPT) -g $(ARCHFLAGS)
CFLAGS   += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wno-unused-parameter -Wno-format-truncation \
            -Iinclude $(shell pkg-config --cflags $(PKGS) 2>/dev/null) $(SAN)
LDFLAGS  += $(SAN)
LDLIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread -lm
TESTLIBS = $(shell pkg-config --libs $(TESTPKGS) 2>/dev/null)

SRCS     := $(filter-out src/main.c,$(wildcard src/*.c))
OBJS     := $(SRCS:src/%.c=$(BUILD)/obj/%.o)
TESTSRCS := $(wildcard tests/test_*.c)
TESTBINS := $(TESTSRCS:tests/%.c=$(BUILD)/tests/%)
TESTUTIL := $(BUILD)/obj/tests/testutil.o
DEPS_STAMP := $(BUILD)/.deps-ok

.PHONY: all deps test asan run bench clean
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

bench: $(BUILD)/layerlens
	@BUILD=$(BUILD) scripts/bench.sh

clean:
	rm -rf build build-asan build-tsan

-include $(OBJS:.o=.d) $(BUILD)/obj/main.d $(TESTSRCS:tests/%.c=$(BUILD)/obj/tests/%.d) $(TESTUTIL:.o=.d)

# atomrun -- build, test, bench, install.   `make help` lists the targets.

PREFIX    ?= /usr/local
DESTDIR   ?=
BINDIR    ?= $(PREFIX)/bin
LIBDIR    ?= $(PREFIX)/lib
INCDIR    ?= $(PREFIX)/include
MANDIR    ?= $(PREFIX)/share/man
LUA_CMOD  ?= $(PREFIX)/lib/lua/5.4
LUA_LMOD  ?= $(PREFIX)/share/lua/5.4
PKGDIR    ?= $(LIBDIR)/pkgconfig
DOCDIR    ?= $(PREFIX)/share/doc/atomrun
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions

CC        ?= cc
LUA       ?= lua5.4
LUA_PC    ?= lua5.4
LUA_CFLAGS := $(shell pkg-config --cflags $(LUA_PC))
LUA_LIBS   := $(shell pkg-config --libs $(LUA_PC))
# The binary links Lua statically (like Debian's own lua5.4) and exports its
# symbols, so C modules such as cjson.so load into it; this also keeps
# start-up as fast as lua5.4's.
LUA_STATIC ?= $(shell pkg-config --variable=libdir $(LUA_PC) 2>/dev/null)/liblua5.4.a

CFLAGS    ?= -O2 -g
# WERROR= builds with warnings as warnings (packagers); ours stay errors.
WERROR    ?= -Werror
WARN       = -std=c11 -Wall -Wextra $(WERROR) -Wshadow -Wstrict-prototypes \
             -Wmissing-prototypes
# Hidden by default: only what atomrun.h marks ATOMRUN_API (atomrun_*,
# luaopen_atomrun*) is exported from libatomrun.so and atomrun/core.so.
# CPPFLAGS and LDFLAGS are the caller's (dpkg-buildflags' hardening) and
# come on every compile and link line.
BASE_CFLAGS = $(WARN) $(CFLAGS) -fPIC -fvisibility=hidden -pthread $(EXTRA_CFLAGS)
ALL_CPPFLAGS = -Isrc $(CPPFLAGS)
ALL_CFLAGS = $(ALL_CPPFLAGS) $(BASE_CFLAGS) $(LUA_CFLAGS) $(ETCD_CFLAGS)
# The etcd backend (src/etcd/): libcurl and jansson.
ETCD_CFLAGS := $(shell pkg-config --cflags libcurl jansson)
# libcurl is dlopen'ed by src/etcd/client.c on the first etcd name (see
# there why); only its headers are needed at build time.
ETCD_LIBS   := $(shell pkg-config --libs jansson) -ldl
LDLIBS_ALL = $(ETCD_LIBS) -lm -pthread

VERSION   := $(shell sed -n 's/^\#define ATOMRUN_VERSION "\(.*\)"/\1/p' src/atomrun.h)
SOVERSION  = 0

B          = build
# Three layers, a directory each, and what each may know:
#   src/core/  libc only (locks, files, processes, /proc): no Lua headers
#              on its include path, so a slip does not compile;
#   src/etcd/  the etcd client: the only code that knows libcurl and jansson;
#   src/bind/  the Lua binding and the embedding helpers (bind/embed.c): the only
#              code that knows Lua.
# src/main.c is the command line, on the public atomrun.h alone.
CORE_SRC   = $(wildcard src/core/*.c)
ETCD_SRC   = $(wildcard src/etcd/*.c)
EMBED_SRC  = src/bind/embed.c
BIND_SRC   = $(filter-out $(EMBED_SRC),$(wildcard src/bind/*.c))
LUA_SRC   := $(shell find lua -name '*.lua' | LC_ALL=C sort)

CORE_OBJ   = $(CORE_SRC:src/%.c=$(B)/%.o) $(ETCD_SRC:src/%.c=$(B)/%.o)
BIND_OBJ   = $(BIND_SRC:src/%.c=$(B)/%.o) $(B)/bundle.o
EMBED_OBJ  = $(EMBED_SRC:src/%.c=$(B)/%.o)
LIB_OBJ    = $(CORE_OBJ) $(BIND_OBJ) $(EMBED_OBJ)
# The Lua C module for stock lua5.4 is atomrun/core.so under $(B)/lua/ (not
# $(B)/atomrun/: that is the binary), so LUA_CPATH=$(B)/lua/?.so finds it.
CMOD       = $(B)/lua/atomrun/core.so
TARGETS    = $(B)/atomrun $(B)/libatomrun.a $(B)/libatomrun.so \
             $(CMOD) $(B)/atomrun.pc

.PHONY: all test check check-all check-asan check-lua54 check-embed test-bins bench clean \
        install uninstall help demo print-san

all: $(TARGETS)

$(B):
	@mkdir -p $(B)

# Header dependencies from the compiler (-MMD -MP): a header change
# rebuilds what includes it, and nothing else.
DEPFLAGS   = -MMD -MP

$(B)/core/%.o: src/core/%.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CPPFLAGS) $(BASE_CFLAGS) $(DEPFLAGS) -c -o $@ $<

$(B)/etcd/%.o: src/etcd/%.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CPPFLAGS) $(BASE_CFLAGS) $(ETCD_CFLAGS) $(DEPFLAGS) -c -o $@ $<

$(B)/bind/%.o: src/bind/%.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CPPFLAGS) $(BASE_CFLAGS) $(LUA_CFLAGS) $(DEPFLAGS) -c -o $@ $<

$(B)/main.o: src/main.c | $(B)
	$(CC) $(ALL_CPPFLAGS) $(BASE_CFLAGS) $(LUA_CFLAGS) $(DEPFLAGS) -c -o $@ $<

$(B)/bundle.c: scripts/bundle.lua $(LUA_SRC) | $(B)
	$(LUA) scripts/bundle.lua $@ $(LUA_SRC)

$(B)/bundle.o: $(B)/bundle.c
	$(CC) $(ALL_CPPFLAGS) $(BASE_CFLAGS) $(DEPFLAGS) -c -o $@ $<

-include $(LIB_OBJ:.o=.d) $(B)/main.d

# The program links jansson statically too: one shared library fewer to
# find, map and relocate at every start (flock(1) loads libc alone), which
# was ~30K instructions and 3 page faults of `atomrun lock -n F true`.
# libatomrun.so and atomrun/core.so keep -ljansson.  glibc's libm.a cannot
# go into a dynamic program, so libm stays shared.
JANSSON_STATIC ?= $(shell pkg-config --variable=libdir jansson 2>/dev/null)/libjansson.a
# What the program exports (in place of -Wl,-E, which exported every
# global, jansson's too): Lua's API, which C modules that scripts require
# (cjson.so) are linked against, and atomrun's (atomrun.h's ATOMRUN_API);
# never the statically linked jansson, which a module's own -ljansson
# would otherwise bind to.
PROG_EXPORTS = -Wl,--export-dynamic-symbol=lua_*,--export-dynamic-symbol=luaL_* \
               -Wl,--export-dynamic-symbol=luaopen_*,--export-dynamic-symbol=atomrun_*
PROG_LIBS  = $(LUA_STATIC) $(JANSSON_STATIC) -ldl -lm -pthread

$(B)/atomrun: $(B)/main.o $(LIB_OBJ)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) $(PROG_EXPORTS) -o $@ $^ $(PROG_LIBS)

$(B)/libatomrun.a: $(LIB_OBJ)
	rm -f $@
	ar rcs $@ $^

# -z nodelete: core/wait.c leaves a pthread key destructor (it deletes a
# thread's timer at thread exit); after a dlclose it must still be there.
SO_FLAGS   = -Wl,-z,nodelete

$(B)/libatomrun.so: $(LIB_OBJ)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) $(SO_FLAGS) -shared -Wl,-soname,libatomrun.so.$(SOVERSION) \
	    -o $@ $^ $(LUA_LIBS) $(LDLIBS_ALL)

# The Lua C module for stock lua5.4: no liblua linked in, the interpreter
# provides it (linking a second copy of Lua into one process breaks it).
$(CMOD): $(CORE_OBJ) $(BIND_OBJ)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) $(SO_FLAGS) -shared -o $@ $^ $(LDLIBS_ALL)

# libdir and includedir are written relative to ${prefix} when they lie
# under PREFIX, so that pkg-config's --define-prefix and
# PKG_CONFIG_SYSROOT_DIR can move a staged install (make install DESTDIR=).
pc_rel = $(patsubst $(PREFIX)/%,$${prefix}/%,$(1))
PC_SED = sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(call pc_rel,$(LIBDIR))|' \
	     -e 's|@INCDIR@|$(call pc_rel,$(INCDIR))|' -e 's|@VERSION@|$(VERSION)|'
# The ready job scripts, installed as examples (the man pages point at
# them and at the Lua reference, installed beside them).
EXAMPLES   = $(filter-out scripts/bundle.lua,$(wildcard scripts/*.lua))

# Regenerated at install time too, so the paths match the PREFIX given there.
$(B)/atomrun.pc: src/atomrun.pc.in src/atomrun.h | $(B)
	$(PC_SED) $< > $@

# ------------------------------------------------------------------ tests

demo: all
	$(B)/atomrun scripts/demo.lua

# Every C program the tests run is built here, with the flags above (never
# by a spec file or spec/run.sh, which only run them; a missing one is a
# failure there).  One rule: spec/c/NAME.c (the C tests), spec/etcd_core.c
# (the driver etcd_core_spec.lua runs), spec/host.c (the embedding test) and
# spec/tsan/threads.c (check-tsan) become $(B)/spec_NAME; the ASan pass
# builds the same ones with B=build/asan CFLAGS="$(SAN_FLAGS)", check-tsan
# with B=$(TSAN_B) CFLAGS="$(TSAN_FLAGS)".
vpath %.c spec/c spec spec/tsan
C_TESTS    = $(patsubst spec/c/%.c,$(B)/spec_%,$(wildcard spec/c/*.c))
TEST_BINS  = $(C_TESTS) $(B)/spec_etcd_core $(B)/spec_host
# LD_PRELOAD shims that make faults for real in the specs (a stepped wall
# clock, a suspend; a filesystem without O_TMPFILE; a machine without
# libcurl).  Test tools, never installed.
SHIMS      = $(B)/clockshim.so $(B)/notmpfile.so $(B)/nocurl.so

$(B)/spec_%: %.c $(B)/libatomrun.a
	$(CC) $(ALL_CFLAGS) $(DEPFLAGS) $(LDFLAGS) -o $@ $< $(B)/libatomrun.a $(LUA_LIBS) $(LDLIBS_ALL)

# A shim's functions stand in for libc's, so they are exported (not
# -fvisibility=hidden as the library's are).
$(B)/%.so: spec/shim/%.c | $(B)
	$(CC) $(ALL_CPPFLAGS) $(WARN) $(CFLAGS) $(EXTRA_CFLAGS) $(DEPFLAGS) -fPIC -shared $(LDFLAGS) \
	    -o $@ $< -ldl

-include $(TEST_BINS:=.d) $(B)/spec_threads.d $(SHIMS:.so=.d)

# What the specs and spec/run.sh expect in $(B) besides `all`.
test-bins: $(TEST_BINS) $(SHIMS)

# make check: the inner loop -- the atomrun pass without the #heavy tests
# (storms, sweeps: make test runs them), the C tests and the embedding
# test, one after the other; no sanitizers, no lua5.4 pass.
check: all test-bins
	@AR_BUILD=$(CURDIR)/$(B) sh spec/run.sh --check

# What CI and the README run: every pass, lane and stress spec.
test check-all: all test-bins
	@AR_BUILD=$(CURDIR)/$(B) sh spec/run.sh

# The sanitizer flags, the one copy: spec/run.sh (make check-asan, and the
# last pass of make test) asks `make print-san` for SAN_FLAGS and builds
# build/asan/ with them; check-tsan builds build/tsan/ with TSAN_FLAGS.
# They go in CFLAGS, which every link line carries too, so the sanitizer
# runtimes are linked without a second copy in LDFLAGS.
SAN_FLAGS   = -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
              -fno-sanitize-recover=all
TSAN_FLAGS  = -O1 -g -fno-omit-frame-pointer -fsanitize=thread

print-san:
	@echo "$(SAN_FLAGS)"

# The specs and C tests again, against an ASan+UBSan build in build/asan/
# (make test runs this too, in its second lane: see spec/run.sh).
check-asan: all test-bins
	@AR_BUILD=$(CURDIR)/$(B) sh spec/run.sh --asan-only

# The specs in stock lua5.4 with $(B)/lua/atomrun/core.so alone (what
# `require "atomrun"` users run; make test runs it too).
check-lua54: all test-bins
	@AR_BUILD=$(CURDIR)/$(B) sh spec/run.sh --lua54-only

# ---------------------------------------- hardening: TSan and valgrind
# check-tsan: the core and the binding from 8 threads (spec/tsan/threads.c),
# built with ThreadSanitizer into $(TSAN_B)/.  check-valgrind: memcheck over
# the CLI on the scripts in spec/valgrind/ and the bundled commands: 0 bytes
# definitely lost, 0 invalid reads or writes.
TSAN_B     ?= build/tsan

.PHONY: check-tsan check-valgrind
check-tsan:
	@$(MAKE) --no-print-directory -s B=$(TSAN_B) CFLAGS="$(TSAN_FLAGS)" $(TSAN_B)/spec_threads
	@TSAN_OPTIONS="halt_on_error=1 exitcode=66 second_deadlock_stack=1" \
	    $(TSAN_B)/spec_threads

check-valgrind: all
	@sh spec/valgrind/run.sh $(B)
# ------------------------------------------------------------------------

check-embed: $(B)/spec_host
	@$(B)/spec_host spec/embed_job.lua hello world

# The benchmarks' raw-syscall references: plain C11, no library, built next
# to atomrun (scripts/bench/run.sh runs them).
BENCH_BINS = $(B)/bench/ref $(B)/bench/harness

$(B)/bench/%: scripts/bench/%.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CPPFLAGS) $(WARN) $(CFLAGS) $(EXTRA_CFLAGS) $(DEPFLAGS) $(LDFLAGS) -o $@ $<

-include $(BENCH_BINS:=.d)

bench: all $(BENCH_BINS) $(B)/spec_etcd_core
	@sh scripts/bench/run.sh --build $(B) $(if $(QUICK),--quick,) \
	    $(if $(BEFORE),--before $(BEFORE),)

# ---------------------------------------------------------------- install

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(INCDIR) $(DESTDIR)$(LIBDIR) \
	    $(DESTDIR)$(PKGDIR) $(DESTDIR)$(LUA_CMOD)/atomrun $(DESTDIR)$(LUA_LMOD)/atomrun/cmd \
	    $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man3
	install -m 755 $(B)/atomrun $(DESTDIR)$(BINDIR)/atomrun
	@# FLOCK_LINK=1: bin/flock -> atomrun (flock(1) by that name); never over a real flock
	if [ -n "$(FLOCK_LINK)" ]; then f=$(DESTDIR)$(BINDIR)/flock; \
	    if [ -e "$$f" ] && [ "$$(readlink "$$f")" != atomrun ]; then \
	        echo "refusing to replace $$f (not a link to atomrun)" >&2; exit 1; fi; \
	    ln -sf atomrun "$$f"; fi
	install -m 644 src/atomrun.h $(DESTDIR)$(INCDIR)/atomrun.h
	install -m 644 $(B)/libatomrun.a $(DESTDIR)$(LIBDIR)/libatomrun.a
	install -m 755 $(B)/libatomrun.so $(DESTDIR)$(LIBDIR)/libatomrun.so.$(VERSION)
	ln -sf libatomrun.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libatomrun.so.$(SOVERSION)
	ln -sf libatomrun.so.$(SOVERSION) $(DESTDIR)$(LIBDIR)/libatomrun.so
	$(PC_SED) src/atomrun.pc.in > $(DESTDIR)$(PKGDIR)/atomrun.pc
	install -m 755 $(CMOD) $(DESTDIR)$(LUA_CMOD)/atomrun/core.so
	for f in $(LUA_SRC); do install -D -m 644 $$f $(DESTDIR)$(LUA_LMOD)/$${f#lua/}; done
	for f in src/*.1; do [ -f "$$f" ] && install -m 644 $$f $(DESTDIR)$(MANDIR)/man1/ || true; done
	for f in src/*.3; do [ -f "$$f" ] && install -m 644 $$f $(DESTDIR)$(MANDIR)/man3/ || true; done
	install -d $(DESTDIR)$(DOCDIR)/examples
	install -m 644 lua/API.md README.md $(DESTDIR)$(DOCDIR)/
	install -m 755 $(EXAMPLES) $(DESTDIR)$(DOCDIR)/examples/
	install -D -m 644 src/atomrun.bash-completion $(DESTDIR)$(BASHCOMPDIR)/atomrun
	if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ]; then ldconfig || true; fi

uninstall:
	f=$(DESTDIR)$(BINDIR)/flock; if [ "$$(readlink "$$f")" = atomrun ]; then rm -f "$$f"; fi
	rm -f $(DESTDIR)$(BINDIR)/atomrun $(DESTDIR)$(INCDIR)/atomrun.h \
	    $(DESTDIR)$(LIBDIR)/libatomrun.a $(DESTDIR)$(LIBDIR)/libatomrun.so \
	    $(DESTDIR)$(LIBDIR)/libatomrun.so.$(SOVERSION) \
	    $(DESTDIR)$(LIBDIR)/libatomrun.so.$(VERSION) \
	    $(DESTDIR)$(PKGDIR)/atomrun.pc $(DESTDIR)$(LUA_CMOD)/atomrun/core.so \
	    $(DESTDIR)$(MANDIR)/man1/atomrun.1 $(DESTDIR)$(MANDIR)/man3/atomrun.3
	rm -rf $(DESTDIR)$(LUA_LMOD)/atomrun $(DESTDIR)$(DOCDIR)
	rm -f $(DESTDIR)$(BASHCOMPDIR)/atomrun
	rmdir $(DESTDIR)$(LUA_CMOD)/atomrun 2>/dev/null || true
	if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ]; then ldconfig || true; fi

clean:
	rm -rf build

help:
	@echo "make                build build/atomrun, build/libatomrun.{a,so}, build/lua/atomrun/core.so, build/atomrun.pc"
	@echo "make demo           build and run scripts/demo.lua"
	@echo "make check          the inner loop: the specs inside build/atomrun but the #heavy ones,"
	@echo "                    the C tests and the embedding test; no sanitizers, no lua5.4 pass;"
	@echo "                    SPEC='spec/x_spec.lua ...' runs some specs only"
	@echo "make test           everything (make check-all is the same: what CI and the README run):"
	@echo "                    the specs in stock lua5.4 and inside build/atomrun, the C tests and"
	@echo "                    the embedding test, check-tsan, check-valgrind, and the ASan pass, in"
	@echo "                    two lanes at once (spec/run.sh; which pass runs which tests: the tags"
	@echo "                    #child, #harness, #heavy and the run profiles in spec/.busted);"
	@echo "                    SPEC='spec/x_spec.lua ...' runs some specs only, AR_NO_ASAN=1 skips"
	@echo "                    the ASan pass, AR_NO_HARDEN=1 skips check-tsan and check-valgrind,"
	@echo "                    AR_SERIAL=1 runs the lanes one after the other"
	@echo "make check-all      the same as make test"
	@echo "make check-asan     the specs and C tests against an ASan+UBSan build (build/asan/)"
	@echo "make check-lua54    the specs in stock lua5.4 with build/lua/atomrun/core.so"
	@echo "make check-tsan     the core and the binding from 8 threads under ThreadSanitizer (build/tsan/)"
	@echo "make check-valgrind memcheck over the CLI: no leaks, no invalid reads or writes"
	@echo "make check-embed    a C host linked with libatomrun.a runs spec/embed_job.lua"
	@echo "make test-bins      build the C programs and LD_PRELOAD shims the tests run (build/spec_*,"
	@echo "                    build/*.so); make check, test, check-asan and check-lua54 do it first"
	@echo "make print-san      print the ASan+UBSan compiler flags (SAN_FLAGS) spec/run.sh uses"
	@echo "make bench          benchmarks against raw C and peer tools, side by side; results in"
	@echo "                    build/bench/results.json (QUICK=1: a seconds-long smoke run;"
	@echo "                    BEFORE=DIR: DIR/atomrun too, side by side, for before/after)"
	@echo "make install        PREFIX=$(PREFIX) DESTDIR=$(DESTDIR); FLOCK_LINK=1: also bin/flock ->"
	@echo "                    atomrun (atomrun is flock(1) by that name; never over a real flock)"
	@echo "make uninstall      remove what install put there"
	@echo "make clean          remove build/ (every build tree and the bench results)"
	@echo "make help           this list"

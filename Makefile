# Switchover: `make demo` runs the main job, `make test` the tests, `make bench` the benchmarks,
# `make plots` the figures in docs/figures, `make test-sanitizers` the tests under AddressSanitizer
# and ThreadSanitizer, `make fuzz` the libFuzzer targets (docs/security.md).
# Each target installs what is missing (Debian packages) first.

SWIFT      ?= swift
SWIFTFLAGS ?=
APT_PKGS   := libpci-dev libssl-dev openssl pci.ids pciutils xz-utils
SUDO       := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps build test test-scaffold test-sanitizers fuzz docs demo bench plots clean

all: build

# Install the Debian packages the build and tests need, only when one is missing.
deps:
	@missing=""; \
	pkg-config --exists libpci || missing="$$missing libpci-dev"; \
	pkg-config --exists openssl || missing="$$missing libssl-dev"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	[ -f /usr/share/misc/pci.ids ] || missing="$$missing pci.ids"; \
	command -v lspci >/dev/null || missing="$$missing pciutils"; \
	command -v xz >/dev/null || missing="$$missing xz-utils"; \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq -o DPkg::Lock::Timeout=300 $$missing; \
	fi

build: deps
	$(SWIFT) build $(SWIFTFLAGS)

test: deps
	$(SWIFT) build --build-tests $(SWIFTFLAGS)
	$(SWIFT) test --skip-build $(SWIFTFLAGS)

# The real `swift package scaffold-handler` in a vendor's package and in a copy of this one, then
# swift build and swift test on what it generated (Tests/CLITests/ScaffoldPackageTests.swift).
# Separate from `test`: its own builds take minutes the first time; they are kept in .build-scaffold/.
test-scaffold: deps
	$(SWIFT) build --build-tests $(SWIFTFLAGS)
	SWITCHOVER_SCAFFOLD_TEST=1 SWIFT="$(SWIFT)" $(SWIFT) test --skip-build $(SWIFTFLAGS) --filter ScaffoldPackageTests

# The whole suite under AddressSanitizer (.build-asan/), then under ThreadSanitizer (.build-tsan/).
# Any report fails the run: ASan and LeakSanitizer end the process at their report, TSan makes it
# exit 66. The suppressions, each with its reason: scripts/lsan.supp, and the TSan ones that
# scripts/tsan-suppressions.sh derives from the sources (Synchronization.Mutex; docs/security.md).
# Serial (--no-parallel): under a sanitizer every test is several times slower, and in parallel
# the tests that run both ends of a migration in one process starve each other's cooperative
# threads into their stall timeouts; one at a time they measure the code, not the scheduler.
SANITIZER_TEST_ENV := ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS="suppressions=$(CURDIR)/scripts/lsan.supp:print_suppressions=0" \
	TSAN_OPTIONS="suppressions=$(CURDIR)/.build-tsan/tsan.supp:print_suppressions=0"

test-sanitizers: deps
	$(SWIFT) build --build-tests --sanitize=address --scratch-path .build-asan $(SWIFTFLAGS)
	$(SANITIZER_TEST_ENV) $(SWIFT) test --skip-build --no-parallel --sanitize=address --scratch-path .build-asan $(SWIFTFLAGS)
	$(SWIFT) build --build-tests --sanitize=thread --scratch-path .build-tsan $(SWIFTFLAGS)
	bash scripts/tsan-suppressions.sh > .build-tsan/tsan.supp
	$(SANITIZER_TEST_ENV) $(SWIFT) test --skip-build --no-parallel --sanitize=thread --scratch-path .build-tsan $(SWIFTFLAGS)

# Every libFuzzer target of Fuzz/ for FUZZ_SECONDS seconds each, after building them with
# AddressSanitizer and writing their seed corpora (scripts/fuzz.sh; corpora and crashes in .fuzz/).
FUZZ_SECONDS ?= 60

fuzz: deps
	FUZZ_SECONDS=$(FUZZ_SECONDS) SWIFT="$(SWIFT)" bash scripts/fuzz.sh

# The DocC catalogs of the library products, as one combined archive in docs/.docc-build/
# (swift-docc-plugin). Fails on any warning.
DOCC_TARGETS := MigrationStream MigrationCore VFIO VFIOSimulator DeviceMatch VFIOPCIHandler MLX5Handler MigrationTestKit ExampleVM PCIDiscovery
DOCS_OUT     := docs/.docc-build

docs: deps
	@rm -rf $(DOCS_OUT) && mkdir -p $(DOCS_OUT)
	@status=0; \
	$(SWIFT) package $(SWIFTFLAGS) --allow-writing-to-directory $(DOCS_OUT) generate-documentation \
	  $(addprefix --target ,$(DOCC_TARGETS)) --enable-experimental-combined-documentation \
	  --output-path $(DOCS_OUT)/Switchover.doccarchive > $(DOCS_OUT)/build.log 2>&1 || status=$$?; \
	cat $(DOCS_OUT)/build.log; \
	if [ $$status -ne 0 ]; then echo "make docs: failed"; exit $$status; fi; \
	if grep -q "warning:" $(DOCS_OUT)/build.log; then echo "make docs: warnings (above)"; exit 1; fi; \
	echo "make docs: $(DOCS_OUT)/Switchover.doccarchive, no warnings"

demo: build
	$(SWIFT) run $(SWIFTFLAGS) devprobe
	$(SWIFT) run $(SWIFTFLAGS) switchover demo

# The ordo-one benchmarks in Benchmarks/ (stream throughput vs raw socket I/O; downtime vs the
# destination's load cost with switchover-ack off and on, and vs device count; peak memory
# migrating 1 GiB and 4 GiB of device state; one dirty sync per GiB of tracked guest memory vs a
# RAM pass), then devprobe (text and --json) against lspci -nnk.
bench: deps
	cd Benchmarks && $(SWIFT) package --allow-writing-to-package-directory benchmark
	bash scripts/bench-devprobe.sh

# Runs the downtime sweeps (a release build of Benchmarks/, then under a minute) and draws
# docs/figures/*.png from their results with matplotlib: the first of python3 and
# /usr/bin/python3 that has it, else Debian's python3-matplotlib is installed with apt-get.
PLOT_PYTHON = $$(for p in python3 /usr/bin/python3; do $$p -c "import matplotlib" 2>/dev/null && { echo $$p; break; }; done)

plots: deps
	@[ -n "$(PLOT_PYTHON)" ] || { \
	  echo "make plots: installing python3-matplotlib"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq -o DPkg::Lock::Timeout=300 python3-matplotlib; }
	mkdir -p docs/figures
	cd Benchmarks && $(SWIFT) run -c release $(SWIFTFLAGS) downtime-sweep --output ../docs/figures/downtime-results.json
	$(PLOT_PYTHON) scripts/plot-figures.py docs/figures/downtime-results.json docs/figures

# The tree's one style (.swift-format: 4-space indent, 140 columns; the rules it cannot fix by
# itself are off). `make format` rewrites in place; `make lint` (run by .ci/run) fails on any finding.
SWIFT_FORMAT_PATHS := Package.swift Sources Tests Plugins Benchmarks/Package.swift Benchmarks/Benchmarks Benchmarks/Sources Benchmarks/Tools Fuzz/Package.swift Fuzz/Sources Fuzz/Targets Fuzz/Tools

format:
	$(SWIFT) format format --in-place --recursive --parallel $(SWIFT_FORMAT_PATHS)

lint:
	$(SWIFT) format lint --strict --recursive --parallel $(SWIFT_FORMAT_PATHS)

clean:
	rm -rf .build Benchmarks/.build .build-scaffold .build-asan .build-tsan Fuzz/.build .fuzz docs/.docc-build

# Runs kernel-vfio-check against the real VFIO migration uAPI: Debian's 6.12 kernel and the mtty
# sample device under QEMU (TCG). Downloads what it needs with apt-get; prints SKIPPED (and the fix) when
# it cannot -- a failure with CI=true. Passes only on a clean console verdict. See docs/kernel-test.md.
.PHONY: test-kernel
test-kernel:
	SWIFT="$(SWIFT)" bash scripts/kernel-test/run.sh

# Migrations between Switchover and a real QEMU 10 (Debian bookworm-backports) with real mtty devices,
# inside the make test-kernel guest: QEMU -> file -> Switchover, Switchover -> QEMU live over TCP with
# return-path and switchover-ack. Same downloads, skip and verdict rules as test-kernel. See
# docs/qemu-peer-test.md.
.PHONY: test-qemu
test-qemu:
	SWIFT="$(SWIFT)" bash scripts/kernel-test/qemu-peer.sh

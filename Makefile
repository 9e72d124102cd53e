# Switchover: `make demo` runs the main job, `make test` the tests, `make bench` the benchmarks.
# Each target installs what is missing (Debian packages) first.

SWIFT      ?= swift
SWIFTFLAGS ?=
APT_PKGS   := libpci-dev pci.ids pciutils xz-utils
SUDO       := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps build test demo bench clean

all: build

# Install the Debian packages the build and tests need, only when one is missing.
deps:
	@missing=""; \
	pkg-config --exists libpci || missing="$$missing libpci-dev"; \
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

demo: build
	$(SWIFT) run $(SWIFTFLAGS) devprobe
	$(SWIFT) run $(SWIFTFLAGS) switchover demo

bench: deps
	cd Benchmarks && $(SWIFT) package --allow-writing-to-package-directory benchmark

clean:
	rm -rf .build Benchmarks/.build

# Runs kernel-vfio-check against the real VFIO migration uAPI: Debian's 6.12 kernel and the mtty
# sample device under QEMU (TCG). Downloads what it needs with apt-get; prints SKIPPED when it cannot.
# See docs/kernel-test.md.
.PHONY: test-kernel
test-kernel:
	SWIFT="$(SWIFT)" bash scripts/kernel-test/run.sh

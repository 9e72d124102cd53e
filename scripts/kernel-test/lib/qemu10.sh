# QEMU 10 from Debian's bookworm-backports for make test-qemu (sourced by qemu-peer.sh): the suite in a
# sources file of its own, the .debs downloaded and unpacked the way lib/fetch.sh does the kernel's, and
# the binary, its libraries and its firmware put into the guest's initramfs. Nothing is installed on the
# host: the host's own QEMU (7.2) boots the guest.
# shellcheck shell=bash

KT_QEMU_SUITE=${QEMU_TEST_SUITE:-bookworm-backports}
KT_QEMU_SOURCES=/etc/apt/sources.list.d/switchover-$KT_QEMU_SUITE.sources
# The system emulator, its modules and data, and the firmware it boots (bios-256k.bin).
KT_QEMU_PKGS=(qemu-system-x86 qemu-system-common qemu-system-data seabios)

# apt-get update of the backports source alone (the other lists stay as they are).
kt_qemu_update() {
    $SUDO apt-get update -qq -o Dir::Etc::sourcelist="$KT_QEMU_SOURCES" -o Dir::Etc::sourceparts=- \
        -o APT::Get::List-Cleanup=0 >"$KT_CACHE/apt-update-qemu.log" 2>&1
}

# The version of a package in the suite, empty when apt has none.
kt_qemu_suite_version() {
    apt-cache madison "$1" 2>/dev/null | awk -F'|' -v suite=" $KT_QEMU_SUITE/" 'index($3, suite) { gsub(/ /, "", $2); print $2; exit }'
}

# Adds the suite (deb.debian.org, Debian's archive key) unless a sources file has it; sets
# KT_QEMU_VERSION (e.g. 1:10.0.2+ds-2+deb13u1~bpo12+1) and KT_QEMU_SEABIOS_VERSION.
kt_qemu_resolve() {
    if ! grep -rqs "$KT_QEMU_SUITE" /etc/apt/sources.list /etc/apt/sources.list.d/; then
        kt_log "adding $KT_QEMU_SUITE in $KT_QEMU_SOURCES"
        printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            "$KT_QEMU_SUITE" | $SUDO tee "$KT_QEMU_SOURCES" >/dev/null ||
            kt_skip "cannot write $KT_QEMU_SOURCES" "run as root or with sudo"
    fi
    local try
    for try in 1 2; do
        KT_QEMU_VERSION=$(kt_qemu_suite_version qemu-system-x86)
        KT_QEMU_SEABIOS_VERSION=$(kt_qemu_suite_version seabios)
        if [ -n "$KT_QEMU_VERSION" ] && [ -n "$KT_QEMU_SEABIOS_VERSION" ]; then break; fi
        [ "$try" = 2 ] || kt_qemu_update || true
    done
    [ -n "$KT_QEMU_VERSION" ] || kt_skip "apt knows no qemu-system-x86 in $KT_QEMU_SUITE (apt's output: $KT_CACHE/apt-update-qemu.log)" \
        "check $KT_QEMU_SOURCES, then: ${SUDO:+sudo }apt-get update && apt-cache madison qemu-system-x86"
    [ -n "$KT_QEMU_SEABIOS_VERSION" ] || kt_skip "apt knows no seabios in $KT_QEMU_SUITE" \
        "${SUDO:+sudo }apt-get update && apt-cache madison seabios"
    case $KT_QEMU_VERSION in
        1:10.*) ;;
        *) kt_skip "$KT_QEMU_SUITE has qemu-system-x86 $KT_QEMU_VERSION, not QEMU 10" "apt-cache madison qemu-system-x86" ;;
    esac
    kt_log "QEMU $KT_QEMU_VERSION, seabios $KT_QEMU_SEABIOS_VERSION from $KT_QEMU_SUITE"
}

# Downloads and unpacks the packages into $KT_CACHE/qemu10/<version>/{debs,root}.
kt_qemu_fetch() {
    local dir="$KT_CACHE/qemu10/${KT_QEMU_VERSION//:/_}" pkg deb
    KT_QEMU_ROOT="$dir/root"
    if [ ! -f "$dir/debs/.complete" ]; then
        mkdir -p "$dir/debs"
        local pkgs=()
        for pkg in "${KT_QEMU_PKGS[@]}"; do pkgs+=("$pkg/$KT_QEMU_SUITE"); done
        kt_log "downloading ${pkgs[*]}"
        if ! (cd "$dir/debs" && apt-get download -q -o APT::Sandbox::User=root "${pkgs[@]}") >"$KT_CACHE/apt-download-qemu.log" 2>&1; then
            kt_skip "apt-get download of QEMU 10 failed: $(kt_apt_error "$KT_CACHE/apt-download-qemu.log")" \
                "check that apt's mirror answers (apt's output: $KT_CACHE/apt-download-qemu.log), then run make test-qemu again"
        fi
        touch "$dir/debs/.complete"
    fi
    if [ ! -f "$dir/.extracted" ]; then
        rm -rf "$KT_QEMU_ROOT"
        mkdir -p "$KT_QEMU_ROOT"
        for deb in "$dir"/debs/*.deb; do dpkg-deb -x "$deb" "$KT_QEMU_ROOT"; done
        touch "$dir/.extracted"
    fi
    KT_QEMU_BIN="$KT_QEMU_ROOT/usr/bin/qemu-system-x86_64"
    [ -x "$KT_QEMU_BIN" ] || kt_die "no qemu-system-x86_64 in $KT_QEMU_ROOT"
    [ -f "$KT_QEMU_ROOT/usr/share/seabios/bios-256k.bin" ] || kt_die "no seabios bios-256k.bin in $KT_QEMU_ROOT"
}

# The release binaries the guest runs beside QEMU: qemu-peer-check and switchover (for inspect).
kt_build_peer_swift() {
    local product bin
    for product in qemu-peer-check switchover; do
        (cd "$REPO_ROOT" && "$SWIFT" build -c release --product "$product" --static-swift-stdlib \
            --scratch-path "$KT_SCRATCH") >"$KT_CACHE/swift-build-$product.log" 2>&1 || {
            tail -n 30 "$KT_CACHE/swift-build-$product.log" >&2
            kt_die "swift build of $product failed (log: $KT_CACHE/swift-build-$product.log)"
        }
    done
    bin=$(cd "$REPO_ROOT" && "$SWIFT" build -c release --static-swift-stdlib --scratch-path "$KT_SCRATCH" --show-bin-path)
    KT_PEER_BIN="$bin/qemu-peer-check"
    KT_SWITCHOVER_BIN="$bin/switchover"
    [ -x "$KT_PEER_BIN" ] && [ -x "$KT_SWITCHOVER_BIN" ] || kt_die "no $KT_PEER_BIN or $KT_SWITCHOVER_BIN"
}

# Called by kt_pack_initramfs: QEMU 10 at its Debian paths (its firmware search path is
# /usr/share/qemu:/usr/share/seabios), its libraries as ldd names them on this host, and the two
# Swift binaries.
# Certificates for the TLS step, made afresh each run with the host's openssl (no key is committed or
# cached): a CA, a server certificate for 127.0.0.1 in QEMU's tls-creds-x509 layout (server/: ca-cert.pem,
# server-cert.pem, server-key.pem) and a client certificate in MigrationTLS's (client/: ca-cert.pem,
# client-cert.pem, client-key.pem). RSA with digitalSignature and keyEncipherment, as QEMU's
# crypto/tlscredsx509.c checks key usage; serverAuth/clientAuth as it checks the purpose.
kt_qemu_tls_certs() {
    command -v openssl >/dev/null || kt_skip "the openssl command is not installed (the TLS step's certificates)" \
        "sudo apt-get install openssl"
    local d="$KT_CACHE/qemu-tls" who usage
    rm -rf "$d"
    mkdir -p "$d/ca" "$d/server" "$d/client"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/O=Switchover make test-qemu/CN=test CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "$d/ca/ca-key.pem" -out "$d/ca/ca-cert.pem" 2>/dev/null || kt_die "openssl: the test CA"
    for who in server client; do
        usage=clientAuth
        [ "$who" = server ] && usage=serverAuth
        openssl req -new -newkey rsa:2048 -nodes -subj "/O=Switchover make test-qemu/CN=127.0.0.1" \
            -keyout "$d/$who/$who-key.pem" -out "$d/$who.csr" 2>/dev/null || kt_die "openssl: the $who key"
        printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=%s\nsubjectAltName=IP:127.0.0.1\n' \
            "$usage" >"$d/$who.ext"
        openssl x509 -req -in "$d/$who.csr" -CA "$d/ca/ca-cert.pem" -CAkey "$d/ca/ca-key.pem" -set_serial "$RANDOM$RANDOM" \
            -days 2 -extfile "$d/$who.ext" -out "$d/$who/$who-cert.pem" 2>/dev/null || kt_die "openssl: the $who certificate"
        cp "$d/ca/ca-cert.pem" "$d/$who/ca-cert.pem"
    done
    kt_log "TLS: a test CA, server and client certificates for 127.0.0.1 in $d"
}

kt_initramfs_extra() {
    local stage=$1 f
    kt_stage_binary "$stage" "$KT_QEMU_BIN" /usr/bin/qemu-system-x86_64
    # Of QEMU's data only what a q35 machine without devices of its own loads (the other
    # architectures' firmware and the modules stay out: the guest's RAM holds the initramfs).
    mkdir -p "$stage/usr/share/qemu"
    for f in kvmvapic.bin linuxboot_dma.bin multiboot_dma.bin pvh.bin; do
        cp -a "$KT_QEMU_ROOT/usr/share/qemu/$f" "$stage/usr/share/qemu/"
    done
    cp -a "$KT_QEMU_ROOT/usr/share/seabios" "$stage/usr/share/"
    kt_stage_binary "$stage" "$KT_PEER_BIN" /qemu-peer-check
    kt_stage_binary "$stage" "$KT_SWITCHOVER_BIN" /switchover
    # The TLS step's credentials (kt_qemu_tls_certs): QEMU's server directory, our client's.
    mkdir -p "$stage/tls"
    cp -a "$KT_CACHE/qemu-tls/server" "$KT_CACHE/qemu-tls/client" "$stage/tls/"
}

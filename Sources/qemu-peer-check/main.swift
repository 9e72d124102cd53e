// qemu-peer-check: the Switchover side of `make test-qemu`, run inside the kernel-test guest beside a
// real QEMU 10 (scripts/kernel-test/qemu-peer-guest.sh drives QEMU and calls this). Every step prints
// `PASS name` or `FAIL name: reason`; `info:` lines carry what was seen. See docs/qemu-peer-test.md.
//
// Usage:
//   qemu-peer-check file-to-device FILE UUID       load the VFIO section of a QEMU-written FILE into the
//                                                  mdev UUID and compare what the device then saves
//   qemu-peer-check file-data FILE                 print `data HEX` (the VFIO device data in FILE) and
//                                                  `config HEX` (its config state)
//   qemu-peer-check source UUID HOST PORT MACHINE [TLSDIR]
//                                                  migrate the mdev UUID live to a QEMU listening on
//                                                  tcp:HOST:PORT (over TLS with the client files of
//                                                  TLSDIR: ca-cert.pem, client-cert.pem, client-key.pem),
//                                                  then print `sent HEX`
//   qemu-peer-check destination UUID HOST PORT MACHINE
//                                                  listen on tcp:HOST:PORT for a live QEMU source, load
//                                                  its VFIO section into the mdev UUID (every other
//                                                  section skipped), then print `loaded HEX` and
//                                                  `received HEX` (the DATA bytes of QEMU's stream)

#if os(Linux)
import Glibc

signal(SIGPIPE, SIG_IGN)
let arguments = Array(CommandLine.arguments.dropFirst())
let status: Int32
switch arguments.first {
case "file-to-device" where arguments.count == 3:
    status = PeerSteps.fileToDevice(path: arguments[1], uuid: arguments[2])
case "file-data" where arguments.count == 2:
    status = PeerSteps.fileData(path: arguments[1])
case "source" where arguments.count == 5 || arguments.count == 6:
    status = PeerSteps.source(
        uuid: arguments[1], host: arguments[2], port: arguments[3], machine: arguments[4], tls: arguments.count == 6 ? arguments[5] : nil)
case "destination" where arguments.count == 5:
    status = PeerSteps.destination(uuid: arguments[1], host: arguments[2], port: arguments[3], machine: arguments[4])
default:
    print(
        "usage: qemu-peer-check file-to-device FILE UUID | file-data FILE | source UUID HOST PORT MACHINE [TLSDIR] | destination UUID HOST PORT MACHINE"
    )
    status = 2
}
exit(status)
#else
print("qemu-peer-check runs on Linux only")
#endif

#ifndef PCISHIM_H
#define PCISHIM_H
/*
 * A small C shim around libpci (pciutils 3.9) for what Swift cannot do itself:
 *
 *  - pci_access->error/warning/debug are `void (*)(char *msg, ...)`: Swift can neither define
 *    a C variadic function nor assign one (the fields import as OpaquePointer). The handlers
 *    live here.
 *  - libpci's error handler is declared noreturn and the default one calls exit(1). Ours
 *    longjmp()s back into the guarded wrapper that made the call, which returns -1 with the
 *    message. No Swift frame is ever between setjmp and longjmp (libpci and the handler are
 *    both C), so the jump is well defined. libpci must never run outside a guard; if it does
 *    and raises, the handler abort()s (it never calls exit()).
 *  - pci_lookup_name is variadic, which Swift cannot call: a fixed-arity wrapper.
 *
 * Guard state is thread-local: libpci calls its handlers synchronously on the calling
 * thread, so independent pci_access objects may be used on different threads.
 */
#include <pci/pci.h>
#include <stddef.h>

/** What a guarded call reports. */
typedef struct pcishim_diag {
    /** The message of the fatal libpci error when a call returns -1. */
    char error[512];
    /** The warnings raised during the call, '\n'-separated, truncated to fit. */
    char warnings[2048];
    /** How many warnings were raised (including those that did not fit). */
    int warning_count;
} pcishim_diag;

/** Installs the shim's error, warning and debug handlers. Call after pci_alloc(), before pci_init(). */
void pcishim_install_handlers(struct pci_access *a);

/* Guarded calls: 0 = ok, -1 = libpci raised a fatal error (diag->error). diag may be NULL. */

/** pci_init(a). After -1 the access must only be passed to pci_cleanup(). */
int pcishim_init(struct pci_access *a, pcishim_diag *diag);

/** pci_fill_info(d, flags); the known fields go to *known_fields. */
int pcishim_fill_info(struct pci_dev *d, int flags, int *known_fields, pcishim_diag *diag);

/**
 * pci_lookup_name with a fixed arity: pass the ids the flag combination needs and zero for the
 * rest. *result is buf, a static string of libpci, or NULL (PCI_LOOKUP_NO_NUMBERS and unknown).
 */
int pcishim_lookup_name(struct pci_access *a, char *buf, int size, int flags,
                        int id1, int id2, int id3, int id4,
                        const char **result, pcishim_diag *diag);

#endif

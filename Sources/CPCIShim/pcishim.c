#include "pcishim.h"
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Per-thread guard state: libpci calls its handlers synchronously on the calling thread. */
static _Thread_local jmp_buf *tl_jmp;
static _Thread_local pcishim_diag *tl_diag;

static void pcishim_error(char *msg, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void pcishim_warning(char *msg, ...) __attribute__((format(printf, 1, 2)));
static void pcishim_debug(char *msg, ...) __attribute__((format(printf, 1, 2)));

static void pcishim_error(char *msg, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, msg);
    vsnprintf(buf, sizeof buf, msg, ap);
    va_end(ap);
    if (tl_diag)
        snprintf(tl_diag->error, sizeof tl_diag->error, "%s", buf);
    if (tl_jmp)
        longjmp(*tl_jmp, 1);
    /* An unguarded libpci call is a bug in the Swift wrapper. libpci's callers assume this
       handler does not return, and the process must not exit(): abort with the message. */
    fprintf(stderr, "pcishim: libpci raised a fatal error outside a guard: %s\n", buf);
    abort();
}

static void pcishim_warning(char *msg, ...)
{
    if (!tl_diag)
        return;
    pcishim_diag *d = tl_diag;
    size_t used = strnlen(d->warnings, sizeof d->warnings);
    if (used + 2 < sizeof d->warnings) {
        va_list ap;
        va_start(ap, msg);
        if (used) { d->warnings[used++] = '\n'; d->warnings[used] = 0; }
        vsnprintf(d->warnings + used, sizeof d->warnings - used, msg, ap);
        va_end(ap);
    }
    d->warning_count++;
}

static void pcishim_debug(char *msg, ...)
{
    (void)msg;  /* only called when a->debugging is set, which we never do */
}

void pcishim_install_handlers(struct pci_access *a)
{
    a->error = pcishim_error;
    a->warning = pcishim_warning;
    a->debug = pcishim_debug;
}

/* Runs `body` with the guard armed; a fatal libpci error lands back here and returns -1.
   Only locals set before setjmp and not modified after it are read after the jump. */
#define GUARDED(diag, body)                                                            \
    do {                                                                               \
        jmp_buf jb;                                                                    \
        jmp_buf *saved_jmp = tl_jmp;                                                   \
        pcishim_diag *saved_diag = tl_diag;                                            \
        if (diag) { (diag)->error[0] = 0; (diag)->warnings[0] = 0; (diag)->warning_count = 0; } \
        tl_diag = (diag);                                                              \
        tl_jmp = &jb;                                                                  \
        if (setjmp(jb) == 0) {                                                         \
            body;                                                                      \
            tl_jmp = saved_jmp; tl_diag = saved_diag;                                  \
            return 0;                                                                  \
        }                                                                              \
        tl_jmp = saved_jmp; tl_diag = saved_diag;                                      \
        return -1;                                                                     \
    } while (0)

int pcishim_init(struct pci_access *a, pcishim_diag *diag)
{
    GUARDED(diag, pci_init(a));
}

int pcishim_fill_info(struct pci_dev *d, int flags, int *known_fields, pcishim_diag *diag)
{
    GUARDED(diag, { int k = pci_fill_info(d, flags); if (known_fields) *known_fields = k; });
}

int pcishim_lookup_name(struct pci_access *a, char *buf, int size, int flags,
                        int id1, int id2, int id3, int id4,
                        const char **result, pcishim_diag *diag)
{
    GUARDED(diag, {
        const char *r = pci_lookup_name(a, buf, size, flags, id1, id2, id3, id4);
        if (result) *result = r;
    });
}

#ifndef CLIBPCI_SHIM_H
#define CLIBPCI_SHIM_H
/* Debian installs the header at /usr/include/<triplet>/pci/pci.h; pkg-config libpci adds the -I. */
#include <pci/pci.h>
#endif

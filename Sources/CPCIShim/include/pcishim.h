#ifndef PCISHIM_H
#define PCISHIM_H
#include <pci/pci.h>
#endif

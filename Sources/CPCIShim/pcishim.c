#include "pcishim.h"

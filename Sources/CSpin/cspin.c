// CSpin is header-only (cspin.h); SwiftPM needs one source file per C target.
#include "cspin.h"

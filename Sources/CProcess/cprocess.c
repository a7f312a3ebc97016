#include "cprocess.h"

#if defined(__linux__)
#include <sys/prctl.h>

int workbench_signal_when_parent_dies(int signal) {
    return prctl(PR_SET_PDEATHSIG, (unsigned long)signal, 0UL, 0UL, 0UL);
}
#else
int workbench_signal_when_parent_dies(int signal) {
    (void)signal;
    return 0;
}
#endif

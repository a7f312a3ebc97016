#ifndef WORKBENCH_CPROCESS_H
#define WORKBENCH_CPROCESS_H

/// Asks the kernel to send `signal` to this process when its parent dies (Linux's
/// prctl(PR_SET_PDEATHSIG); a no-op elsewhere). Returns 0 on success. prctl is variadic, which
/// Swift cannot call directly.
int workbench_signal_when_parent_dies(int signal);

#endif

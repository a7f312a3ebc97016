// The CPU's spin-wait hint (x86 PAUSE, ARM YIELD), for the tensor worker pool's short spins:
// it keeps a spinning thread from starving its hyper-thread sibling and saves power.
#ifndef CSPIN_H
#define CSPIN_H

static inline void cspin_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

#endif

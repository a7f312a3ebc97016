// TensorCore's helpers from C. The CPU's spin-wait hint (x86 PAUSE, ARM YIELD), for the tensor
// worker pool's short spins: it keeps a spinning thread from starving its hyper-thread sibling and saves power.
#ifndef CSPIN_H
#define CSPIN_H

#if defined(__linux__)
#include <limits.h>
#include <malloc.h>
#endif

// glibc's malloc settings for a training process (StoragePool.keepFreedPages): no allocation gets
// its own mmap and the heap is never trimmed, so freed pages are reused warm instead of being
// returned to the kernel and faulted (and zeroed) back in at the next step. No-op off glibc.
static inline void cmemory_keep_freed_pages(void) {
#if defined(__GLIBC__) && defined(M_MMAP_MAX)
    mallopt(M_MMAP_MAX, 0);
    mallopt(M_TRIM_THRESHOLD, INT_MAX);
#endif
}

static inline void cspin_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

// The square root of eight floats in vector instructions (sqrtps or vsqrtps; NEON's fsqrt),
// correctly rounded like the scalar one. Swift's SIMD8.squareRoot() goes lane by lane through
// libm's sqrtf. Swift imports the vector type as SIMD8<Float>.
typedef float cvec_float8 __attribute__((ext_vector_type(8)));
static inline cvec_float8 cvec_sqrt8(cvec_float8 v) {
    return __builtin_elementwise_sqrt(v);
}

// Eight floats widened to doubles in vector instructions (vcvtps2pd); Swift imports the types as
// SIMD8<Float> and SIMD8<Double>.
typedef double cvec_double8 __attribute__((ext_vector_type(8)));
static inline cvec_double8 cvec_widen8(cvec_float8 v) {
    return __builtin_convertvector(v, cvec_double8);
}

#endif

// OpenBLAS's CBLAS interface (pkg-config openblas; Debian: libopenblas-dev).
#include <cblas.h>
#include <stdlib.h>
#include <strings.h>
int openblas_get_num_threads(void);
void openblas_set_num_threads(int num_threads);

// A dynamic-architecture OpenBLAS (Debian's) carries kernels for every x86 core and picks one when
// it loads, by the CPU's model number. A model it does not know yet (0.3.21 and Intel's Emerald
// Rapids, family 6 model 207, say) falls back to Prescott's SSE3 kernels: a quarter of the
// AVX-512 kernels' speed. These are weak so that an OpenBLAS built for one core links too.
char *openblas_get_corename(void) __attribute__((weak));
void gotoblas_dynamic_init(void) __attribute__((weak));
void gotoblas_dynamic_quit(void) __attribute__((weak));

// The OpenBLAS core in use, after choosing one by the CPU's features where OpenBLAS fell back to
// Prescott and the user did not name one (OPENBLAS_CORETYPE): SkylakeX's kernels with AVX-512
// (F, BW, DQ, VL), Haswell's with AVX2 and FMA. Call before the first product and while no other
// thread reads the environment. "unknown" where the OpenBLAS does not say.
static inline const char *cblas_choose_core(void) {
    if (!openblas_get_corename) return "unknown";
    const char *core = openblas_get_corename();
#if defined(__x86_64__)
    if (core && strcasecmp(core, "Prescott") == 0 && getenv("OPENBLAS_CORETYPE") == NULL && gotoblas_dynamic_init && gotoblas_dynamic_quit) {
        __builtin_cpu_init();
        const char *better = NULL;
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")
            && __builtin_cpu_supports("avx512vl")) better = "SkylakeX";
        else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) better = "Haswell";
        if (better) {
            // OpenBLAS reads its core from the environment at initialisation: set it, initialise
            // again, and leave the environment as it was (child processes choose for themselves).
            setenv("OPENBLAS_CORETYPE", better, 1);
            gotoblas_dynamic_quit();
            gotoblas_dynamic_init();
            unsetenv("OPENBLAS_CORETYPE");
            core = openblas_get_corename();
        }
    }
#endif
    return core ? core : "unknown";
}

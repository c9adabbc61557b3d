// Run-time CPU feature detection: the one place that decides which ISA path runs.
#include "KernelsC.h"
#include <stdatomic.h>
#include <unistd.h>
#include <stdio.h>
#include <string.h>

static _Atomic int forced_portable = 0;

void tsr_force_portable(int on) { atomic_store(&forced_portable, on ? 1 : 0); }

static int detect(void) {
    int f = 0;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) f |= TSR_CPU_AVX2_FMA;
    if (__builtin_cpu_supports("avx")) f |= TSR_CPU_F16C; // F16C ships with every AVX2 part
#elif defined(__aarch64__)
    f |= TSR_CPU_NEON;
#if defined(__ARM_FEATURE_DOTPROD)
    f |= TSR_CPU_NEON_DOT;
#endif
#endif
    return f;
}

static _Atomic int detected = -1;

int tsr_cpu_features(void) {
    if (atomic_load_explicit(&forced_portable, memory_order_relaxed)) return 0;
    int f = atomic_load_explicit(&detected, memory_order_relaxed);
    if (f < 0) { f = detect(); atomic_store(&detected, f); }
    return f;
}

int tsr_physical_cores(void) {
    // Count distinct (physical id, core id) pairs in /proc/cpuinfo; fall back to online CPUs.
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return online > 0 ? (int)online : 1;
    char line[256];
    int phys = -1, pairs[1024][2], npairs = 0;
    while (fgets(line, sizeof line, f)) {
        int v;
        if (sscanf(line, "physical id : %d", &v) == 1) phys = v;
        else if (sscanf(line, "core id : %d", &v) == 1) {
            int seen = 0;
            for (int i = 0; i < npairs; i++) if (pairs[i][0] == phys && pairs[i][1] == v) seen = 1;
            if (!seen && npairs < 1024) { pairs[npairs][0] = phys; pairs[npairs][1] = v; npairs++; }
        }
    }
    fclose(f);
    if (npairs == 0) return online > 0 ? (int)online : 1;
    return npairs;
}

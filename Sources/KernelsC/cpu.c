// Run-time CPU feature detection: the one place that decides which ISA path runs.
#include "KernelsC.h"
#include <stdatomic.h>
#include <unistd.h>
#include <stdio.h>
#include <string.h>
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1UL << 20) // AT_HWCAP bit of the ARMv8.2 dot-product instructions
#endif
#elif defined(__aarch64__) && defined(__APPLE__)
#include <sys/sysctl.h>
#endif

static _Atomic int forced_portable = 0;
static _Atomic int disabled_features = 0;

void tsr_force_portable(int on) { atomic_store(&forced_portable, on ? 1 : 0); }

void tsr_cpu_disable(int features) { atomic_store(&disabled_features, features); }

static int detect(void) {
    int f = 0;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) f |= TSR_CPU_AVX2_FMA;
    if (__builtin_cpu_supports("avx")) f |= TSR_CPU_F16C; // F16C ships with every AVX2 part
    // (the AVX-512 names are reported only when the OS saves the AVX-512 register state)
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("gfni"))
        f |= TSR_CPU_AVX512_VNNI;
#elif defined(__aarch64__)
    f |= TSR_CPU_NEON; // Advanced SIMD (and fp16 conversion) is baseline on AArch64
#if defined(__linux__)
    if (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) f |= TSR_CPU_NEON_DOT;
#elif defined(__APPLE__)
    int dot = 0;
    size_t len = sizeof dot;
    if (sysctlbyname("hw.optional.arm.FEAT_DotProd", &dot, &len, NULL, 0) == 0 && dot) f |= TSR_CPU_NEON_DOT;
#elif defined(__ARM_FEATURE_DOTPROD)
    f |= TSR_CPU_NEON_DOT; // no run-time query here: trust the build's target
#endif
#endif
    return f;
}

static _Atomic int detected = -1;

int tsr_cpu_features(void) {
    if (atomic_load_explicit(&forced_portable, memory_order_relaxed)) return 0;
    int f = atomic_load_explicit(&detected, memory_order_relaxed);
    if (f < 0) { f = detect(); atomic_store(&detected, f); }
    return f & ~atomic_load_explicit(&disabled_features, memory_order_relaxed);
}

// The one selection table: every dispatcher switches on tsr_kernel_path(its family), and the
// paths named here for an architecture are exactly the cases its dispatchers have.
int tsr_kernel_path(int kernel) {
    if (kernel < 0 || kernel >= TSR_KERNEL_COUNT) return -1;
    int f = tsr_cpu_features();
#if defined(__x86_64__)
    switch (kernel) {
    case TSR_KERNEL_F16_GEMV: {
        const int need = TSR_CPU_AVX2_FMA | TSR_CPU_F16C;
        return (f & need) == need ? TSR_PATH_AVX2 : TSR_PATH_REF;
    }
    case TSR_KERNEL_F16_CONVERT: return f & TSR_CPU_F16C ? TSR_PATH_F16C : TSR_PATH_REF;
    case TSR_KERNEL_QUANT_I8: {
        const int vnni = TSR_CPU_AVX2_FMA | TSR_CPU_F16C | TSR_CPU_AVX512_VNNI;
        return (f & vnni) == vnni ? TSR_PATH_AVX2_VNNI : f & TSR_CPU_AVX2_FMA ? TSR_PATH_AVX2 : TSR_PATH_REF;
    }
    default: return f & TSR_CPU_AVX2_FMA ? TSR_PATH_AVX2 : TSR_PATH_REF; // F32, READ_BYTES, QUANT
    }
#elif defined(__aarch64__)
    switch (kernel) {
    case TSR_KERNEL_READ_BYTES: return TSR_PATH_REF; // no NEON probe: the scalar loop is the probe
    case TSR_KERNEL_QUANT_I8:
        return f & TSR_CPU_NEON_DOT ? TSR_PATH_NEON_DOT : f & TSR_CPU_NEON ? TSR_PATH_NEON : TSR_PATH_REF;
    default: return f & TSR_CPU_NEON ? TSR_PATH_NEON : TSR_PATH_REF; // F32, F16_GEMV, F16_CONVERT, QUANT
    }
#else
    (void)f;
    return TSR_PATH_REF;
#endif
}

const char *tsr_path_name(int path) {
    switch (path) {
    case TSR_PATH_REF: return "ref";
    case TSR_PATH_AVX2: return "avx2";
    case TSR_PATH_F16C: return "f16c";
    case TSR_PATH_NEON: return "neon";
    case TSR_PATH_NEON_DOT: return "neondot";
    case TSR_PATH_AVX2_VNNI: return "avx2vnni";
    default: return "invalid";
    }
}

// ---- the default thread count -------------------------------------------------------------
// Decode is a sequence of short parallel regions; each waits for its slowest chunk, so a thread
// on an efficiency core (Cortex-A55 beside A76 on an RK3588, an Intel E-core) or on the SMT twin
// of a busy core slows every region down to its pace. The default is therefore one thread per
// physical core of the fastest class:
//   * SMT twins count once (the first CPU of topology/thread_siblings_list stands for the core);
//   * with cpu_capacity (arm64 and the hybrid x86 kernels expose it: 1024 for the biggest core),
//     a core counts when its capacity is at least half the largest: RK3588 4 × A76 (1024) + 4 ×
//     A55 (~414) gives 4; a phone's 1 × X3 + 4 × A715 (~800–900) + 3 × A510 (~300) gives 5;
//   * without it, when cpufreq/cpuinfo_max_freq is known, a core counts when its maximum clock is
//     at least 85 % of the highest (RK3588: 2.4 vs 1.8 GHz → the 4 big ones; Intel P vs E cores);
//   * no sysfs: the distinct (physical id, core id) pairs of /proc/cpuinfo, else online CPUs.

static long read_long(const char *dir, int cpu, const char *file) {
    char path[512];
    snprintf(path, sizeof path, "%s/cpu%d/%s", dir, cpu, file);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long v = -1;
    if (fscanf(f, "%ld", &v) != 1) v = -1;
    fclose(f);
    return v;
}

int tsr_default_threads_sysfs(const char *dir) {
    enum { MAXCPU = 1024 };
    long cap[MAXCPU], freq[MAXCPU]; // 16 KB of stack
    int ncores = 0, misses = 0, haveCap = 1, haveFreq = 1;
    long maxCap = 0, maxFreq = 0;
    for (int cpu = 0; cpu < MAXCPU && misses < 64; cpu++) {
        long first = read_long(dir, cpu, "topology/thread_siblings_list");
        if (first < 0) { misses++; continue; }
        misses = 0;
        if (read_long(dir, cpu, "online") == 0 || first != cpu) continue; // offline, or an SMT twin
        long c = read_long(dir, cpu, "cpu_capacity"), q = read_long(dir, cpu, "cpufreq/cpuinfo_max_freq");
        if (c <= 0) haveCap = 0;
        if (q <= 0) haveFreq = 0;
        cap[ncores] = c;
        freq[ncores] = q;
        if (c > maxCap) maxCap = c;
        if (q > maxFreq) maxFreq = q;
        ncores++;
    }
    if (ncores == 0) return 0;
    int n = 0;
    for (int i = 0; i < ncores; i++) {
        if (haveCap) n += 2 * cap[i] >= maxCap;
        else if (haveFreq) n += 100 * freq[i] >= 85 * maxFreq;
        else n++;
    }
    return n;
}

int tsr_default_threads(void) {
    int fromSysfs = tsr_default_threads_sysfs("/sys/devices/system/cpu");
    if (fromSysfs > 0) return fromSysfs;
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

// Checks every AArch64 NEON kernel of KernelsC against its scalar `_ref` twin (and against a
// float64 evaluation of the same formula), on random data with ragged sizes: scales, offsets
// and activations are non-zero, codes uniform over their whole range [0, 2^B − 1].
// Built and run under qemu-aarch64 by scripts/check-neon.sh; exits 1 on any mismatch.
//
//   neon_check [--expect-dot 0|1] [--no-dotprod] [--seed N]
//     --no-dotprod    tsr_cpu_disable(TSR_CPU_NEON_DOT): dispatch takes the plain-NEON kernels
//     --expect-dot    fail unless tsr_cpu_features() reports dotprod as given (after --no-dotprod)
//
// What "agree" means (u = 2^-24, the fp32 unit roundoff; K = cols, G = group):
//   integer parts (tsr_qdot_i8), the activation quantizer, fp16 → fp32: bit-identical.
//   A16 (tsr_qgemv_f32 / tsr_qgemm_f32): |y − y64| ≤ 2·(K + K/G + 16)·u·Σ_k (|q_k·s_g·x_k| + |m_g·x_k|)
//   A8/A4 (tsr_qgemv_i8 / tsr_qgemm_i8): |y − y64| ≤ 2·(K/32 + K/G + 16)·u·Σ_b dx_b·(|s_g|·Σ|q'·xq| +
//       |m'_g|·Σ|xq|), with q' = q, m' = m; for B = 8 q' = q + 128 and m' gains 128·|s_g| (the
//       kernels use q − 128 and fold 128·s into the offset).
//   dequantize: |d − d64| ≤ 2·u·(|q·s| + |m|);  fp32/fp16 GEMV, dot: 2·(K + 16)·u·Σ|w·x|;
//   axpy: 2·u·(|y| + |a·x|).
// y64 is the float64 value of the kernel's formula on the same fp32/fp16/int8 inputs; the
// NEON result and the scalar reference must each lie within the bound, and both are printed as
// max |err| / bound (< 1 passes) together with the largest |NEON − ref| / magnitude seen.
// Dispatch: the public entry points must route to the variant the CPU flags select (bitwise
// equal outputs), and write nothing outside their rows; tsr_kernel_path must name that variant.
#include "KernelsC.h"
#include "quant_internal.h"
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if !defined(__aarch64__)
#error "neon_check is an AArch64 program (see scripts/check-neon.sh)"
#endif

static const double U = 0x1p-24;

// ---- random numbers -------------------------------------------------------------------------
static uint64_t rng_state = 0x5eed7e55e7a5eedULL;
static uint64_t rnd(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
static double uniform(double a, double b) { return a + (b - a) * (double)(rnd() >> 11) * 0x1p-53; }
static float sign_rnd(void) { return (rnd() & 1) ? 1.0f : -1.0f; }

// ---- bookkeeping ----------------------------------------------------------------------------
typedef struct {
    const char *kernel, *path;
    long calls, outputs, failures;
    int exact;          // compared bit for bit
    double worst;       // max |err| / bound of the path under test
    double worst_ref;   // the same for the scalar reference
    double rel;         // max |path − ref| / magnitude
} stat_t;

enum { MAX_STATS = 64 };
static stat_t stats[MAX_STATS];
static int nstats = 0;
static long total_failures = 0, printed_failures = 0;

static stat_t *stat_for(const char *kernel, const char *path, int exact) {
    for (int i = 0; i < nstats; i++)
        if (!strcmp(stats[i].kernel, kernel) && !strcmp(stats[i].path, path)) return &stats[i];
    if (nstats == MAX_STATS) { fprintf(stderr, "neon_check: too many stat lines\n"); exit(2); }
    stat_t *s = &stats[nstats++];
    memset(s, 0, sizeof *s);
    s->kernel = kernel;
    s->path = path;
    s->exact = exact;
    return s;
}

static void fail(stat_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(stat_t *s, const char *fmt, ...) {
    s->failures++;
    total_failures++;
    if (printed_failures++ < 25) {
        va_list ap;
        va_start(ap, fmt);
        printf("  MISMATCH %s [%s]: ", s->kernel, s->path);
        vprintf(fmt, ap);
        printf("\n");
        va_end(ap);
    }
}

/// One float output against its float64 value, the bound, and the reference's output.
static void check_float(stat_t *s, float got, float ref, double exact, double bound, double mag, const char *where, long idx) {
    s->outputs++;
    double e = fabs((double)got - exact), er = fabs((double)ref - exact);
    if (!(bound > 0)) bound = 1e-300;
    if (e / bound > s->worst) s->worst = e / bound;
    if (er / bound > s->worst_ref) s->worst_ref = er / bound;
    double rel = fabs((double)got - (double)ref) / (mag > 0 ? mag : 1e-300);
    if (rel > s->rel) s->rel = rel;
    if (!(e <= bound) || !(er <= bound))
        fail(s, "%s [%ld]: got %.9g ref %.9g exact %.9g bound %.3g", where, idx, got, ref, exact, bound);
}

static int same_bits(const void *a, const void *b, size_t n) { return memcmp(a, b, n) == 0; }

// Sentinel for "must not be written": a quiet NaN with a payload.
static float sentinel(void) { uint32_t b = 0x7fc0deadu; float f; memcpy(&f, &b, 4); return f; }
static int is_sentinel(float f) { uint32_t b; memcpy(&b, &f, 4); return b == 0x7fc0deadu; }
static void fill_sentinel(float *y, size_t n) { for (size_t i = 0; i < n; i++) y[i] = sentinel(); }

static void *xalloc(size_t n) {
    void *p = aligned_alloc(64, (n + 63) / 64 * 64 + 64);
    if (!p) { fprintf(stderr, "out of memory\n"); exit(2); }
    return p;
}

// ---- test data ------------------------------------------------------------------------------
typedef struct {
    tsr_qweights w;
    uint8_t *q;     // rows × cols codes
    double *s, *m;  // rows × groups scales and offsets (the fp16 values, widened)
    int kind;       // 0 random, 1 extreme
} wcase;

static void make_weights(wcase *c, int bits, int group, int rows, int cols, int kind) {
    int groups = cols / group, qmax = (1 << bits) - 1;
    c->kind = kind;
    c->q = xalloc((size_t)rows * cols);
    uint8_t *codes = xalloc(tsr_q_row_bytes(bits, cols) * rows);
    uint16_t *sc = xalloc(sizeof(uint16_t) * rows * groups), *of = xalloc(sizeof(uint16_t) * rows * groups);
    c->s = xalloc(sizeof(double) * rows * groups);
    c->m = xalloc(sizeof(double) * rows * groups);
    for (int r = 0; r < rows; r++)
        for (int k = 0; k < cols; k++) {
            int v = (int)(rnd() % (uint64_t)(qmax + 1));
            if (kind == 1) v = ((r + k / 32) & 1) ? qmax : 0; // whole blocks at the code extremes
            c->q[(size_t)r * cols + k] = (uint8_t)v;
        }
    tsr_q_pack(c->q, bits, rows, cols, codes);
    for (int i = 0; i < rows * groups; i++) {
        float s = (float)(uniform(0.5, 2.0) / qmax);
        float m = -s * (float)qmax * (float)uniform(0.2, 0.8);
        sc[i] = tsr_f32_to_f16(s);
        of[i] = tsr_f32_to_f16(m);
        if (sc[i] == 0 || (of[i] & 0x7fff) == 0) { i--; continue; }
        c->s[i] = tsr_f16_to_f32(sc[i]);
        c->m[i] = tsr_f16_to_f32(of[i]);
    }
    // c->s, c->m stay row-major; the kernels read the panel order of KernelsQuant.h.
    uint16_t *psc = xalloc(sizeof(uint16_t) * rows * groups), *pof = xalloc(sizeof(uint16_t) * rows * groups);
    tsr_q_pack_groups(sc, bits, rows, groups, psc);
    tsr_q_pack_groups(of, bits, rows, groups, pof);
    free(sc);
    free(of);
    c->w = (tsr_qweights){codes, psc, pof, rows, cols, bits, group};
}

static void free_weights(wcase *c) {
    free(c->q); free((void *)c->w.codes); free((void *)c->w.scales); free((void *)c->w.offsets); free(c->s); free(c->m);
}

/// n non-zero activations; 32-blocks differ in magnitude by up to 2^6. kind 1: every block is
/// ±c with one sign per block (xq = ±levels everywhere, the extreme int16 pair sums), block 1
/// is all zero (dx = 0), and with levels > 0 block 2 holds levels and ±(j + 1/2), j < levels,
/// so that dx = 1 and every code is a rounding tie (ties go to even).
static void make_acts(float *x, int n, int kind, int levels) {
    for (int b = 0; b < n / 32; b++) {
        float scale = (float)exp2(uniform(-3, 3)), sgn = sign_rnd();
        for (int i = 32 * b; i < 32 * b + 32; i++) {
            if (kind == 1 && b == 2 && levels > 0) x[i] = i == 32 * b ? (float)levels : sign_rnd() * ((float)(i % levels) + 0.5f);
            else if (kind == 1) x[i] = (b == 1) ? 0.0f : sgn * scale;
            else x[i] = sign_rnd() * (float)uniform(0.05, 1.0) * scale;
        }
    }
}

// ---- the variants under test ----------------------------------------------------------------
typedef void (*qdot_fn)(const tsr_qweights *, const int8_t *, const int32_t *, int32_t *, int, int);
typedef void (*gemv_i8_fn)(const tsr_qweights *, const int8_t *, const float *, const float *, float *, int, int);
typedef void (*gemm_i8_fn)(const tsr_qweights *, int, const int8_t *, const float *, const float *, float *, int, int, int);
typedef void (*gemv_f32_fn)(const tsr_qweights *, const float *, const float *, float *, int, int);
typedef void (*gemm_f32_fn)(const tsr_qweights *, int, const float *, const float *, float *, int, int, int);
typedef void (*deq_fn)(const tsr_qweights *, float *, int, int);

typedef struct {
    const char *name;
    qdot_fn qdot;
    gemv_i8_fn gemv_i8;
    gemm_i8_fn gemm_i8;
    gemv_f32_fn gemv_f32;
    gemm_f32_fn gemm_f32;
    deq_fn deq;
} variant;

static variant variants[3];
static int nvariants = 0;
static const char *dispatch_target = NULL; // name of the variant dispatch must equal
static long variant_compared = 0, variant_differ = 0; // A8/A4 GEMV outputs: neon vs neondot

// ---- A16 --------------------------------------------------------------------------------------
static void a16_exact(const wcase *c, int r, const float *x, double *exact, double *mass) {
    int cols = c->w.cols, G = c->w.group, groups = cols / G;
    double y = 0, ms = 0;
    for (int k = 0; k < cols; k++) {
        double s = c->s[r * groups + k / G], m = c->m[r * groups + k / G], q = c->q[(size_t)r * cols + k];
        y += (q * s + m) * (double)x[k];
        ms += fabs(q * s * x[k]) + fabs(m * x[k]);
    }
    *exact = y;
    *mass = ms;
}

static void check_a16(const wcase *c, const char *where) {
    const tsr_qweights *w = &c->w;
    int rows = w->rows, cols = w->cols, groups = cols / w->group;
    const int Ts[] = {1, 3, 7};
    int Tmax = 7, ldy = rows + 3;
    float *X = xalloc(sizeof(float) * Tmax * cols), *xs = xalloc(sizeof(float) * Tmax * groups);
    float *ref = xalloc(sizeof(float) * Tmax * ldy), *got = xalloc(sizeof(float) * Tmax * ldy), *sel = xalloc(sizeof(float) * Tmax * ldy);
    double *ex = xalloc(sizeof(double) * Tmax * rows), *bd = xalloc(sizeof(double) * Tmax * rows), *mg = xalloc(sizeof(double) * Tmax * rows);
    for (int t = 0; t < Tmax; t++) {
        make_acts(X + (size_t)t * cols, cols, c->kind, 0);
        tsr_group_sums_f32(X + (size_t)t * cols, cols, w->group, xs + (size_t)t * groups);
        for (int r = 0; r < rows; r++) {
            double e, m;
            a16_exact(c, r, X + (size_t)t * cols, &e, &m);
            ex[t * rows + r] = e;
            mg[t * rows + r] = m;
            bd[t * rows + r] = 2.0 * (cols + groups + 16) * U * m + 1e-30;
        }
    }
    // Row ranges: all rows, and an inner range (rows outside must stay untouched).
    int ranges[2][2] = {{0, rows}, {1, rows > 2 ? rows - 1 : 1}};
    for (int ri = 0; ri < (rows > 2 ? 2 : 1); ri++) {
        int rb = ranges[ri][0], re = ranges[ri][1];
        // GEMV
        fill_sentinel(ref, ldy);
        tsr_qgemv_f32_ref(w, X, xs, ref, rb, re);
        for (int v = 0; v <= nvariants; v++) {
            if (v < nvariants && !variants[v].gemv_f32) continue;
            const char *name = v < nvariants ? variants[v].name : "dispatch";
            stat_t *s = stat_for("qgemv_f32", name, 0);
            s->calls++;
            fill_sentinel(got, ldy);
            if (v < nvariants) variants[v].gemv_f32(w, X, xs, got, rb, re);
            else tsr_qgemv_f32(w, X, xs, got, rb, re);
            for (int r = 0; r < ldy; r++) {
                if (r < rb || r >= re) { if (!is_sentinel(got[r])) fail(s, "%s: wrote row %d outside [%d,%d)", where, r, rb, re); continue; }
                check_float(s, got[r], ref[r], ex[r], bd[r], mg[r], where, r);
            }
            if (v < nvariants && !strcmp(name, "neon")) memcpy(sel, got, sizeof(float) * ldy);
            if (v == nvariants && !same_bits(sel, got, sizeof(float) * ldy)) fail(s, "%s: dispatch differs from %s", where, "neon");
        }
        // GEMM
        for (int ti = 0; ti < 3; ti++) {
            int T = Ts[ti];
            fill_sentinel(ref, (size_t)T * ldy);
            tsr_qgemm_f32_ref(w, T, X, xs, ref, ldy, rb, re);
            for (int v = 0; v <= nvariants; v++) {
                if (v < nvariants && !variants[v].gemm_f32) continue;
                const char *name = v < nvariants ? variants[v].name : "dispatch";
                stat_t *s = stat_for("qgemm_f32", name, 0);
                s->calls++;
                fill_sentinel(got, (size_t)T * ldy);
                if (v < nvariants) variants[v].gemm_f32(w, T, X, xs, got, ldy, rb, re);
                else tsr_qgemm_f32(w, T, X, xs, got, ldy, rb, re);
                for (int t = 0; t < T; t++)
                    for (int r = 0; r < ldy; r++) {
                        float yv = got[(size_t)t * ldy + r];
                        if (r < rb || r >= re) { if (!is_sentinel(yv)) fail(s, "%s T%d: wrote t%d r%d outside [%d,%d)", where, T, t, r, rb, re); continue; }
                        check_float(s, yv, ref[(size_t)t * ldy + r], ex[t * rows + r], bd[t * rows + r], mg[t * rows + r], where, (long)t * ldy + r);
                    }
                if (v < nvariants && !strcmp(name, "neon")) memcpy(sel, got, sizeof(float) * T * ldy);
                if (v == nvariants && !same_bits(sel, got, sizeof(float) * T * ldy))
                    fail(s, "%s T%d: dispatch differs from %s", where, T, "neon");
            }
        }
    }
    free(X); free(xs); free(ref); free(got); free(sel); free(ex); free(bd); free(mg);
}

// ---- dequantization ---------------------------------------------------------------------------
static void check_dequant(const wcase *c, const char *where) {
    const tsr_qweights *w = &c->w;
    int rows = w->rows, cols = w->cols, groups = cols / w->group;
    int rb = rows > 2 ? 1 : 0, re = rows;
    size_t n = (size_t)(re - rb) * cols;
    float *ref = xalloc(sizeof(float) * n), *got = xalloc(sizeof(float) * (n + 8));
    tsr_q_dequantize_ref(w, ref, rb, re);
    for (int v = 0; v <= nvariants; v++) {
        if (v < nvariants && !variants[v].deq) continue;
        const char *name = v < nvariants ? variants[v].name : "dispatch";
        stat_t *s = stat_for("q_dequantize", name, 0);
        s->calls++;
        fill_sentinel(got, n + 8);
        if (v < nvariants) variants[v].deq(w, got, rb, re);
        else tsr_q_dequantize(w, got, rb, re);
        for (int i = 0; i < 8; i++) if (!is_sentinel(got[n + i])) fail(s, "%s: wrote past the end", where);
        for (int r = rb; r < re; r++)
            for (int k = 0; k < cols; k++) {
                double q = c->q[(size_t)r * cols + k], sc = c->s[r * groups + k / w->group], m = c->m[r * groups + k / w->group];
                size_t i = (size_t)(r - rb) * cols + k;
                check_float(s, got[i], ref[i], q * sc + m, 2 * U * (fabs(q * sc) + fabs(m)) + 1e-30, fabs(q * sc) + fabs(m), where, (long)i);
            }
    }
    free(ref); free(got);
}

// ---- A8 / A4 ----------------------------------------------------------------------------------
typedef struct { int8_t *xq; float *dx; int32_t *bsums; float *xsums; } qacts;

static void i8_exact(const wcase *c, int r, const int8_t *xq, const float *dx, double *exact, double *mass) {
    const tsr_qweights *w = &c->w;
    int cols = w->cols, groups = cols / w->group, nb = w->group / 32, fold = w->bits == 8 ? 128 : 0;
    double y = 0, ms = 0;
    for (int g = 0; g < groups; g++) {
        double s = c->s[r * groups + g], m = c->m[r * groups + g];
        for (int b = g * nb; b < (g + 1) * nb; b++) {
            long dot = 0, xsum = 0, adot = 0, axs = 0;
            for (int k = 32 * b; k < 32 * b + 32; k++) {
                int q = c->q[(size_t)r * cols + k], v = xq[k];
                dot += q * v; xsum += v;
                adot += (q + fold) * abs(v); axs += abs(v);
            }
            y += (double)dx[b] * (s * (double)dot + m * (double)xsum);
            ms += (double)dx[b] * (fabs(s) * (double)adot + (fabs(m) + fold * fabs(s)) * (double)axs);
        }
    }
    *exact = y;
    *mass = ms;
}

static void check_i8(const wcase *c, int levels, const char *where0) {
    const tsr_qweights *w = &c->w;
    int rows = w->rows, cols = w->cols, groups = cols / w->group, blocks = cols / 32;
    const int Ts[] = {1, 3, 7};
    int Tmax = 7, ldy = rows + 3;
    char where[160];
    snprintf(where, sizeof where, "%s L%d", where0, levels);
    float *X = xalloc(sizeof(float) * Tmax * cols);
    qacts a = {xalloc((size_t)Tmax * cols), xalloc(sizeof(float) * Tmax * blocks), xalloc(sizeof(int32_t) * Tmax * blocks),
               xalloc(sizeof(float) * Tmax * groups)};
    qacts b = {xalloc((size_t)Tmax * cols), xalloc(sizeof(float) * Tmax * blocks), xalloc(sizeof(int32_t) * Tmax * blocks),
               xalloc(sizeof(float) * Tmax * groups)};
    // The quantizer: dispatch and the direct NEON block quantizer must give the reference's bytes.
    for (int t = 0; t < Tmax; t++) {
        size_t o = (size_t)t * cols, ob = (size_t)t * blocks, og = (size_t)t * groups;
        make_acts(X + o, cols, c->kind, levels);
        tsr_quantize_act_ref(X + o, cols, w->group, levels, a.xq + o, a.dx + ob, a.bsums + ob, a.xsums + og);
        for (int v = 0; v < 2; v++) {
            stat_t *s = stat_for("quantize_act", v ? "dispatch" : "neon", 1);
            s->calls++;
            s->outputs += cols;
            memset(b.xq + o, 0x55, cols);
            if (v) tsr_quantize_act(X + o, cols, w->group, levels, b.xq + o, b.dx + ob, b.bsums + ob, b.xsums + og);
            else tsr_quantize_blocks_neon(X + o, cols, levels, 0, b.xq + o, b.dx + ob, b.bsums + ob);
            int ok = same_bits(a.xq + o, b.xq + o, cols) && same_bits(a.dx + ob, b.dx + ob, sizeof(float) * blocks) &&
                     same_bits(a.bsums + ob, b.bsums + ob, sizeof(int32_t) * blocks) &&
                     (!v || same_bits(a.xsums + og, b.xsums + og, sizeof(float) * groups));
            if (!ok) fail(s, "%s t%d: bytes differ from tsr_quantize_act_ref", where, t);
        }
    }
    // Float64 values of the formula.
    double *ex = xalloc(sizeof(double) * Tmax * rows), *bd = xalloc(sizeof(double) * Tmax * rows), *mg = xalloc(sizeof(double) * Tmax * rows);
    for (int t = 0; t < Tmax; t++)
        for (int r = 0; r < rows; r++) {
            double e, m;
            i8_exact(c, r, a.xq + (size_t)t * cols, a.dx + (size_t)t * blocks, &e, &m);
            ex[t * rows + r] = e;
            mg[t * rows + r] = m;
            bd[t * rows + r] = 2.0 * (blocks + groups + 16) * U * m + 1e-30;
        }
    float *ref = xalloc(sizeof(float) * Tmax * ldy), *got = xalloc(sizeof(float) * Tmax * ldy), *sel = xalloc(sizeof(float) * Tmax * ldy);
    float *first = xalloc(sizeof(float) * ldy);
    int32_t *iref = xalloc(sizeof(int32_t) * rows * blocks), *igot = xalloc(sizeof(int32_t) * (rows * blocks + 8)), *isel = xalloc(sizeof(int32_t) * rows * blocks);
    int ranges[2][2] = {{0, rows}, {1, rows > 2 ? rows - 1 : 1}};
    for (int ri = 0; ri < (rows > 2 ? 2 : 1); ri++) {
        int rb = ranges[ri][0], re = ranges[ri][1];
        size_t ni = (size_t)(re - rb) * blocks;
        // Integer block dots: exact.
        tsr_qdot_i8_ref(w, a.xq, a.bsums, iref, rb, re);
        for (int v = 0; v <= nvariants; v++) {
            const char *name = v < nvariants ? variants[v].name : "dispatch";
            stat_t *s = stat_for("qdot_i8", name, 1);
            s->calls++;
            s->outputs += (long)ni;
            memset(igot, 0x5a, sizeof(int32_t) * (ni + 8));
            if (v < nvariants) variants[v].qdot(w, a.xq, a.bsums, igot, rb, re);
            else tsr_qdot_i8(w, a.xq, a.bsums, igot, rb, re);
            for (size_t i = 0; i < ni; i++)
                if (igot[i] != iref[i]) { fail(s, "%s [%zu]: %d, ref %d", where, i, igot[i], iref[i]); break; }
            for (int i = 0; i < 8; i++) if (igot[ni + i] != 0x5a5a5a5a) { fail(s, "%s: wrote past the end", where); break; }
        }
        // GEMV
        fill_sentinel(ref, ldy);
        tsr_qgemv_i8_ref(w, a.xq, a.dx, a.xsums, ref, rb, re);
        for (int v = 0; v <= nvariants; v++) {
            const char *name = v < nvariants ? variants[v].name : "dispatch";
            stat_t *s = stat_for("qgemv_i8", name, 0);
            s->calls++;
            fill_sentinel(got, ldy);
            if (v < nvariants) variants[v].gemv_i8(w, a.xq, a.dx, a.xsums, got, rb, re);
            else tsr_qgemv_i8(w, a.xq, a.dx, a.xsums, got, rb, re);
            for (int r = 0; r < ldy; r++) {
                if (r < rb || r >= re) { if (!is_sentinel(got[r])) fail(s, "%s: wrote row %d outside [%d,%d)", where, r, rb, re); continue; }
                check_float(s, got[r], ref[r], ex[r], bd[r], mg[r], where, r);
            }
            if (v < nvariants && !strcmp(name, dispatch_target)) memcpy(sel, got, sizeof(float) * ldy);
            if (v == nvariants && !same_bits(sel, got, sizeof(float) * ldy)) fail(s, "%s: dispatch differs from %s", where, dispatch_target);
            if (v == 0) memcpy(first, got, sizeof(float) * ldy);
            if (v == 1 && nvariants == 2)
                for (int r = rb; r < re; r++) { variant_compared++; variant_differ += !same_bits(&first[r], &got[r], 4); }
        }
        // GEMM
        for (int ti = 0; ti < 3; ti++) {
            int T = Ts[ti];
            fill_sentinel(ref, (size_t)T * ldy);
            tsr_qgemm_i8_ref(w, T, a.xq, a.dx, a.xsums, ref, ldy, rb, re);
            for (int v = 0; v <= nvariants; v++) {
                const char *name = v < nvariants ? variants[v].name : "dispatch";
                stat_t *s = stat_for("qgemm_i8", name, 0);
                s->calls++;
                fill_sentinel(got, (size_t)T * ldy);
                if (v < nvariants) variants[v].gemm_i8(w, T, a.xq, a.dx, a.xsums, got, ldy, rb, re);
                else tsr_qgemm_i8(w, T, a.xq, a.dx, a.xsums, got, ldy, rb, re);
                for (int t = 0; t < T; t++)
                    for (int r = 0; r < ldy; r++) {
                        float yv = got[(size_t)t * ldy + r];
                        if (r < rb || r >= re) { if (!is_sentinel(yv)) fail(s, "%s T%d: wrote t%d r%d outside [%d,%d)", where, T, t, r, rb, re); continue; }
                        check_float(s, yv, ref[(size_t)t * ldy + r], ex[t * rows + r], bd[t * rows + r], mg[t * rows + r], where, (long)t * ldy + r);
                    }
                if (v < nvariants && !strcmp(name, dispatch_target)) memcpy(sel, got, sizeof(float) * T * ldy);
                if (v == nvariants && !same_bits(sel, got, sizeof(float) * T * ldy))
                    fail(s, "%s T%d: dispatch differs from %s", where, T, dispatch_target);
            }
        }
    }
    free(X); free(a.xq); free(a.dx); free(a.bsums); free(a.xsums); free(b.xq); free(b.dx); free(b.bsums); free(b.xsums);
    free(ex); free(bd); free(mg); free(ref); free(got); free(sel); free(first); free(iref); free(igot); free(isel);
}

// ---- fp32 / fp16 helpers ----------------------------------------------------------------------
/// The B = 3 panel layout of KernelsQuant.h rebuilt from its formulas (the NEON panel kernels
/// read the low-bit run and the high-bit plane directly): 13 rows = one panel and a 5-row tail.
static void check_layout3(void) {
    stat_t *s = stat_for("q_pack B3 panels", "layout", 1);
    enum { ROWS = 13, COLS = 96 };
    uint8_t q[ROWS * COLS], codes[ROWS * COLS * 3 / 8];
    for (int i = 0; i < ROWS * COLS; i++) q[i] = (uint8_t)(((uint32_t)i * 2654435761u) >> 17 & 7);
    tsr_q_pack(q, 3, ROWS, COLS, codes);
    const size_t rb = tsr_q_row_bytes(3, COLS);
    s->calls++;
    for (int r = 0; r < ROWS; r++)
        for (int k = 0; k < COLS; k++) {
            int b = k / 32, j = k % 8, sv = k % 32 / 8, lo, hi;
            if (r < 8) { // panel: run of 96 bytes per block, low bits of row r at 8r, the plane at 64
                const uint8_t *run = codes + (size_t)b * 96;
                lo = run[8 * r + j] >> (2 * sv) & 3;
                hi = run[64 + 8 * (r % 4) + j] >> ((sv & 1) + 4 * (sv / 2) + (r < 4 ? 2 : 0)) & 1;
            } else { // tail: the 12-byte block, bit k % 32 of the uint32 at byte 8
                const uint8_t *blk = codes + (size_t)r * rb + (size_t)b * 12;
                lo = blk[j] >> (2 * sv) & 3;
                hi = blk[8 + sv] >> j & 1;
            }
            s->outputs++;
            if ((lo | hi << 2) != q[r * COLS + k]) { fail(s, "row %d code %d: %d, expected %d", r, k, lo | hi << 2, q[r * COLS + k]); return; }
        }
}

/// The B = 6 panel layout of KernelsQuant.h rebuilt from its formulas (the NEON panel kernels
/// read the rows' 16-byte parts and the high halves directly): 13 rows = one panel and a 5-row tail.
static void check_layout6(void) {
    stat_t *s = stat_for("q_pack B6 panels", "layout", 1);
    enum { ROWS = 13, COLS = 96 };
    uint8_t q[ROWS * COLS], codes[ROWS * COLS * 6 / 8];
    for (int i = 0; i < ROWS * COLS; i++) q[i] = (uint8_t)(((uint32_t)i * 2654435761u) >> 17 & 63);
    tsr_q_pack(q, 6, ROWS, COLS, codes);
    const size_t rb = tsr_q_row_bytes(6, COLS);
    s->calls++;
    for (int r = 0; r < ROWS; r++)
        for (int k = 0; k < COLS; k++) {
            int b = k / 32, j = k % 16, half = k % 32 / 16, v;
            if (r < 8) { // panel: run of 192 bytes per block, row r's 16 bytes at 16r, q[16..31] >> 2 at 128
                const uint8_t *run = codes + (size_t)b * 192;
                int upper = r / 4, kk = r % 4 / 2, L = r % 2; // r = 2kk + L + 4·upper
                if (!half) v = run[16 * r + j] & 63;
                else v = run[16 * r + j] >> 6 | (run[128 + 32 * kk + 16 * L + j] >> (4 * upper) & 15) << 2;
            } else { // tail: the 24-byte block, the B = 2 block of bits 4-5 at byte 16
                const uint8_t *blk = codes + (size_t)r * rb + (size_t)b * 24;
                v = (blk[j] >> (4 * half) & 15) | (blk[16 + k % 8] >> (2 * (k % 32 / 8)) & 3) << 4;
            }
            s->outputs++;
            if (v != q[r * COLS + k]) { fail(s, "row %d code %d: %d, expected %d", r, k, v, q[r * COLS + k]); return; }
        }
}

static void check_dense(void) {
    // fp16 → fp32 over all 65536 patterns (plus a ragged tail): identical bits, NaN ↔ NaN.
    {
        size_t n = 65536 + 5;
        uint16_t *h = xalloc(sizeof(uint16_t) * n);
        float *a = xalloc(sizeof(float) * n), *b = xalloc(sizeof(float) * n);
        for (size_t i = 0; i < n; i++) h[i] = (uint16_t)(i * 40503u); // a permutation of all patterns, then 5 more
        stat_t *s = stat_for("f16_to_f32_array", "dispatch", 1);
        s->calls++;
        tsr_f16_to_f32_array(h, b, n);
        tsr_force_portable(1);
        tsr_f16_to_f32_array(h, a, n);
        tsr_force_portable(0);
        for (size_t i = 0; i < n; i++) {
            s->outputs++;
            if (isnan(a[i]) && isnan(b[i])) continue;
            if (!same_bits(&a[i], &b[i], 4)) { fail(s, "h=0x%04x: %a vs %a", h[i], b[i], a[i]); break; }
        }
        free(h); free(a); free(b);
    }
    const int colsList[] = {1, 3, 4, 7, 8, 15, 16, 17, 33, 100, 257, 1027};
    const int rowsList[] = {1, 5, 9};
    for (int ci = 0; ci < (int)(sizeof colsList / sizeof *colsList); ci++)
        for (int ri = 0; ri < 3; ri++) {
            int cols = colsList[ci], rows = rowsList[ri];
            float *W = xalloc(sizeof(float) * rows * cols), *x = xalloc(sizeof(float) * cols);
            uint16_t *H = xalloc(sizeof(uint16_t) * rows * cols);
            float *y = xalloc(sizeof(float) * (rows + 1)), *yr = xalloc(sizeof(float) * (rows + 1));
            for (int i = 0; i < rows * cols; i++) {
                W[i] = sign_rnd() * (float)uniform(0.01, 1);
                H[i] = tsr_f32_to_f16(W[i]);
            }
            for (int k = 0; k < cols; k++) x[k] = sign_rnd() * (float)uniform(0.01, 1);
            char where[64];
            snprintf(where, sizeof where, "%dx%d", rows, cols);
            for (int f16 = 0; f16 < 2; f16++) {
                stat_t *s = stat_for(f16 ? "gemv_f16" : "gemv_f32", "dispatch", 0);
                int rb = rows > 2 ? 1 : 0;
                s->calls++;
                fill_sentinel(y, rows + 1);
                fill_sentinel(yr, rows + 1);
                if (f16) { tsr_gemv_f16(H, x, y, cols, rb, rows); tsr_gemv_f16_ref(H, x, yr, cols, rb, rows); }
                else { tsr_gemv_f32(W, x, y, cols, rb, rows); tsr_gemv_f32_ref(W, x, yr, cols, rb, rows); }
                for (int r = 0; r <= rows; r++) {
                    if (r < rb || r == rows) { if (!is_sentinel(y[r])) fail(s, "%s: wrote row %d", where, r); continue; }
                    double e = 0, m = 0;
                    for (int k = 0; k < cols; k++) {
                        double wv = f16 ? tsr_f16_to_f32(H[(size_t)r * cols + k]) : W[(size_t)r * cols + k];
                        e += wv * x[k];
                        m += fabs(wv * x[k]);
                    }
                    check_float(s, y[r], yr[r], e, 2.0 * (cols + 16) * U * m, m, where, r);
                }
            }
            if (ri == 0) {
                // dot and axpy (no _ref twins: the portable path is the reference)
                stat_t *s = stat_for("dot_f32", "dispatch", 0);
                s->calls++;
                float d = tsr_dot_f32(W, x, cols);
                tsr_force_portable(1);
                float dr = tsr_dot_f32(W, x, cols);
                tsr_force_portable(0);
                double e = 0, m = 0;
                for (int k = 0; k < cols; k++) { e += (double)W[k] * x[k]; m += fabs((double)W[k] * x[k]); }
                check_float(s, d, dr, e, 2.0 * (cols + 16) * U * m, m, where, 0);
                s = stat_for("axpy_f32", "dispatch", 0);
                s->calls++;
                float a = (float)uniform(-2, 2);
                float *y0 = xalloc(sizeof(float) * cols), *ya = xalloc(sizeof(float) * (cols + 1)), *yb = xalloc(sizeof(float) * cols);
                for (int k = 0; k < cols; k++) y0[k] = ya[k] = yb[k] = sign_rnd() * (float)uniform(0.01, 1);
                ya[cols] = sentinel();
                tsr_axpy_f32(a, x, ya, cols);
                tsr_force_portable(1);
                tsr_axpy_f32(a, x, yb, cols);
                tsr_force_portable(0);
                if (!is_sentinel(ya[cols])) fail(s, "%s: wrote past the end", where);
                for (int k = 0; k < cols; k++) {
                    double e2 = (double)y0[k] + (double)a * x[k], m2 = fabs((double)y0[k]) + fabs((double)a * x[k]);
                    check_float(s, ya[k], yb[k], e2, 2 * U * m2, m2, where, k);
                }
                free(ya); free(yb); free(y0);
            }
            free(W); free(x); free(H); free(y); free(yr);
        }
}

// ---- exp, softmax, SwiGLU (exp_f32.c) ----------------------------------------------------------
// exp and SwiGLU: the NEON bits equal the scalar twin's; exp within 2 ulp of float64 (0 below
// −87.34, +inf above 88.72). softmax: within (8 + |x − max|)·2^-24 relative of float64 (the
// rounding of x − max is amplified by exp; the summation order differs from the reference's).
static void check_exp_ops(void) {
    stat_t *se = stat_for("exp_f32", "neon", 1), *ss = stat_for("swiglu_f32", "neon", 1), *sm = stat_for("softmax_f32", "neon", 0);
    enum { N = 1031 };
    float *x = xalloc(sizeof(float) * N), *y = xalloc(sizeof(float) * N), *yr = xalloc(sizeof(float) * N);
    float *up = xalloc(sizeof(float) * N), *a = xalloc(sizeof(float) * N), *b = xalloc(sizeof(float) * N);
    for (int i = 0; i < N; i++) x[i] = (float)uniform(-90, 90);
    x[0] = -87.34f; x[1] = 88.73f; x[2] = 0; x[3] = -87.3f; x[4] = 88.7f;
    se->calls++;
    tsr_exp_f32(x, y, N);
    tsr_exp_f32_ref(x, yr, N);
    for (int i = 0; i < N; i++) {
        se->outputs++;
        if (!same_bits(&y[i], &yr[i], 4)) fail(se, "exp(%.9g): neon %.9g ref %.9g", x[i], y[i], yr[i]);
        double e = exp((double)x[i]);
        if (x[i] < -87.33654f) { if (y[i] != 0) fail(se, "exp(%.9g) = %.9g, expected 0", x[i], y[i]); continue; }
        if (x[i] > 88.72284f) { if (!isinf(y[i])) fail(se, "exp(%.9g) = %.9g, expected inf", x[i], y[i]); continue; }
        if (fabs(y[i] - e) > 2 * e * U) fail(se, "exp(%.9g) = %.9g, exact %.9g", x[i], y[i], e);
    }
    for (int n = 1; n <= N; n = n * 3 + 1) {
        for (int i = 0; i < n; i++) { a[i] = b[i] = (float)uniform(-12, 12); up[i] = (float)uniform(-1, 1); }
        double m = -INFINITY, sum = 0;
        for (int i = 0; i < n; i++) m = a[i] > m ? a[i] : m;
        for (int i = 0; i < n; i++) { yr[i] = a[i]; sum += exp((double)a[i] - m); }  // yr keeps the input
        sm->calls++;
        tsr_softmax_f32(a, n);
        tsr_softmax_f32_ref(b, n);
        for (int i = 0; i < n; i++) {
            double e = exp((double)yr[i] - m) / sum;
            // exp's 2 ulp, the rounding of x − max (relative error |x − max|·U in the result), the sum and the scale
            check_float(sm, a[i], b[i], e, (8 + fabs((double)yr[i] - m)) * U * e + 1e-300, e, "softmax", i);
        }
        ss->calls++;
        tsr_swiglu_f32(x, up, y, n);
        tsr_swiglu_f32_ref(x, up, yr, n);
        for (int i = 0; i < n; i++) {
            ss->outputs++;
            if (!same_bits(&y[i], &yr[i], 4)) fail(ss, "swiglu(%.9g, %.9g): neon %.9g ref %.9g", x[i], up[i], y[i], yr[i]);
        }
    }
    free(x); free(y); free(yr); free(up); free(a); free(b);
}

// ---- Hadamard transforms (hadamard.c) ------------------------------------------------------------
// The NEON bits equal the scalar twin's (same additions in the same order), forward and transposed;
// both within 2^-20·‖x‖·(k + m) of the float64 (H_m ⊗ Sylvester H_p)/√n.
static void check_hadamard(void) {
    stat_t *sh = stat_for("hadamard_f32", "neon", 1);
    static const int sizes[] = {1, 2, 4, 8, 12, 24, 40, 56, 72, 144, 576, 1536};
    for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
        const int n = sizes[t];
        int m = 0;
        const int k = tsr_hadamard_factor(n, &m), p = 1 << k;
        const signed char *H = m > 1 ? tsr_hadamard_matrix(m) : NULL;
        float *x = xalloc(sizeof(float) * n), *y = xalloc(sizeof(float) * n), *yr = xalloc(sizeof(float) * n);
        double norm = 0;
        for (int i = 0; i < n; i++) { x[i] = (float)uniform(-1, 1); norm += (double)x[i] * x[i]; }
        norm = sqrt(norm);
        for (int tr = 0; tr < 2; tr++) {
            memcpy(y, x, sizeof(float) * n);
            memcpy(yr, x, sizeof(float) * n);
            sh->calls++;
            if (tsr_hadamard_f32(y, n, tr) != 0 || tsr_hadamard_f32_ref(yr, n, tr) != 0) { fail(sh, "n %d: unsupported", n); continue; }
            for (int i = 0; i < n; i++) {
                double e = 0;
                for (int j = 0; j < n; j++) {
                    const int r = tr ? j : i, c = tr ? i : j;
                    const double hm = H ? H[(r / p) * m + c / p] : 1;
                    e += (__builtin_popcount((unsigned)((r % p) & (c % p))) % 2 ? -hm : hm) * x[j];
                }
                e /= sqrt((double)n);
                sh->outputs++;
                if (!same_bits(&y[i], &yr[i], 4)) fail(sh, "n %d transpose %d i %d: neon %.9g ref %.9g", n, tr, i, y[i], yr[i]);
                if (fabs(y[i] - e) > 0x1p-20 * norm * (k + m)) fail(sh, "n %d transpose %d i %d: %.9g, exact %.9g", n, tr, i, y[i], e);
            }
        }
        free(x); free(y); free(yr);
    }
}

// ---- 8-bit KV cache rows (kv_cache.c) -------------------------------------------------------------
// Rows quantized by tsr_quantize_act (127 levels); dequantize gives the reference's bits (one
// product each); scores and mix within 2·(D + 16)·u·Σ|terms| and 2·(n + 16)·u·Σ|terms| of float64.
static void check_kv8(void) {
    stat_t *sd = stat_for("kv8_dequantize", "neon", 1), *ss = stat_for("kv8_scores", "neon", 0), *sm = stat_for("kv8_mix", "neon", 0);
    static const int cases[][3] = {{1, 1, 32}, {7, 3, 64}, {33, 2, 128}, {100, 8, 64}, {5, 1, 96}}; // n, heads, D
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        const int n = cases[t][0], heads = cases[t][1], D = cases[t][2], width = heads * D;
        int8_t *c = xalloc((size_t)n * width);
        float *d = xalloc(sizeof(float) * n * (width / 32)), *x = xalloc(sizeof(float) * width);
        int32_t *bs = xalloc(sizeof(int32_t) * (width / 32));
        float *xs = xalloc(sizeof(float) * (width / 32));
        for (int p = 0; p < n; p++) {
            const double scale = uniform(0.01, 8);
            for (int i = 0; i < width; i++) x[i] = p % 7 == 3 ? 0 : (float)uniform(-scale, scale);
            tsr_quantize_act(x, width, 32, 127, c + (size_t)p * width, d + (size_t)p * (width / 32), bs, xs);
        }
        const int offset = (heads - 1) * D;
        const int8_t *ch = c + offset;
        const float *dh = d + offset / 32;
        float *q = xalloc(sizeof(float) * D), *w = xalloc(sizeof(float) * n);
        float *y = xalloc(sizeof(float) * (size_t)n * D), *yr = xalloc(sizeof(float) * (size_t)n * D);
        for (int i = 0; i < D; i++) q[i] = (float)uniform(-2, 2);
        for (int p = 0; p < n; p++) w[p] = (float)uniform(0, 1);
        char where[64];
        snprintf(where, sizeof where, "n %d heads %d D %d", n, heads, D);

        sd->calls++;
        tsr_kv8_dequantize(ch, width, dh, width / 32, n, D, y);
        tsr_kv8_dequantize_ref(ch, width, dh, width / 32, n, D, yr);
        for (long i = 0; i < (long)n * D; i++) {
            sd->outputs++;
            if (!same_bits(&y[i], &yr[i], 4)) fail(sd, "%s [%ld]: neon %.9g ref %.9g", where, i, y[i], yr[i]);
        }
        ss->calls++;
        tsr_kv8_scores(ch, width, dh, width / 32, n, D, q, 0.125f, y);
        tsr_kv8_scores_ref(ch, width, dh, width / 32, n, D, q, 0.125f, yr);
        for (int p = 0; p < n; p++) {
            double e = 0, mass = 0;
            for (int i = 0; i < D; i++) {
                double v = 0.125 * dh[(size_t)p * (width / 32) + i / 32] * ch[(size_t)p * width + i] * q[i];
                e += v; mass += fabs(v);
            }
            check_float(ss, y[p], yr[p], e, 2.0 * (D + 16) * U * mass + 1e-300, mass, where, p);
        }
        sm->calls++;
        tsr_kv8_mix(ch, width, dh, width / 32, n, D, w, y);
        tsr_kv8_mix_ref(ch, width, dh, width / 32, n, D, w, yr);
        for (int i = 0; i < D; i++) {
            double e = 0, mass = 0;
            for (int p = 0; p < n; p++) {
                double v = (double)w[p] * dh[(size_t)p * (width / 32) + i / 32] * ch[(size_t)p * width + i];
                e += v; mass += fabs(v);
            }
            check_float(sm, y[i], yr[i], e, 2.0 * (n + 16) * U * mass + 1e-300, mass, where, i);
        }
        free(c); free(d); free(x); free(bs); free(xs); free(q); free(w); free(y); free(yr);
    }
}

// ---- main -------------------------------------------------------------------------------------
int main(int argc, char **argv) {
    int expect_dot = -1, no_dot = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--expect-dot") && i + 1 < argc) expect_dot = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-dotprod")) no_dot = 1;
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) rng_state = strtoull(argv[++i], NULL, 0);
        else { fprintf(stderr, "usage: %s [--expect-dot 0|1] [--no-dotprod] [--seed N]\n", argv[0]); return 2; }
    }
    if (no_dot) tsr_cpu_disable(TSR_CPU_NEON_DOT);
    int f = tsr_cpu_features(), has_dot = (f & TSR_CPU_NEON_DOT) != 0;
    printf("neon_check: features NEON=%d NEON_DOT=%d%s, seed 0x%llx\n", (f & TSR_CPU_NEON) != 0, has_dot,
           no_dot ? " (dotprod disabled by tsr_cpu_disable)" : "", (unsigned long long)rng_state);
    if (!(f & TSR_CPU_NEON)) { printf("FAIL: NEON not reported\n"); return 1; }
    if (expect_dot >= 0 && expect_dot != has_dot) { printf("FAIL: expected NEON_DOT=%d\n", expect_dot); return 1; }

    variants[nvariants++] = (variant){"neon", tsr_qdot_i8_neon, tsr_qgemv_i8_neon, tsr_qgemm_i8_neon,
                                      tsr_qgemv_f32_neon, tsr_qgemm_f32_neon, tsr_q_dequantize_neon};
    if (has_dot) // the dot variants only where the instruction exists (A16 and dequantize have one variant)
        variants[nvariants++] = (variant){"neondot", tsr_qdot_i8_neondot, tsr_qgemv_i8_neondot, tsr_qgemm_i8_neondot, NULL, NULL, NULL};
    dispatch_target = has_dot ? "neondot" : "neon"; // of the A8/A4 kernels; every other kernel: "neon"

    // tsr_kernel_path, the selection the dispatchers switch on: NEON for every family, the A8/A4
    // family on the dot variant where the CPU has it, the bandwidth probe scalar; all scalar
    // under tsr_force_portable; -1 for an unknown family.
    {
        stat_t *s = stat_for("kernel_path", "dispatch", 1);
        for (int portable = 0; portable < 2; portable++) {
            tsr_force_portable(portable);
            for (int k = 0; k < TSR_KERNEL_COUNT; k++) {
                int want = portable || k == TSR_KERNEL_READ_BYTES ? TSR_PATH_REF
                           : k == TSR_KERNEL_QUANT_I8 && has_dot   ? TSR_PATH_NEON_DOT
                                                                   : TSR_PATH_NEON;
                s->calls++;
                s->outputs++;
                int got = tsr_kernel_path(k);
                if (got != want)
                    fail(s, "family %d%s: %s, expected %s", k, portable ? " (force_portable)" : "", tsr_path_name(got),
                         tsr_path_name(want));
            }
        }
        tsr_force_portable(0);
        if (tsr_kernel_path(TSR_KERNEL_COUNT) != -1 || tsr_kernel_path(-1) != -1) fail(s, "an unknown family has a path");
        // The A8/A4 checks below compare the dispatched outputs bit for bit with this variant.
        if (strcmp(tsr_path_name(tsr_kernel_path(TSR_KERNEL_QUANT_I8)), dispatch_target))
            fail(s, "A8/A4 path %s, dispatch check against %s", tsr_path_name(tsr_kernel_path(TSR_KERNEL_QUANT_I8)), dispatch_target);
    }

    // (group, cols): one group (= one block, 2 and 4 blocks), many groups of 32/64/128, row-wide
    // groups of 3 and 33 blocks, and rows longer than 8192. Rows 1 and 6: all plain rows (fewer
    // than one 8-row panel); 16: two whole panels; 37: four panels and a 5-row tail (the checks
    // also start at row 1, cutting the first panel).
    const int shapes[][2] = {{32, 32}, {64, 64}, {128, 128}, {32, 352}, {64, 576}, {128, 1152}, {96, 96}, {1056, 1056}, {64, 8256}};
    const int rowsList[] = {1, 6, 16, 37}, bitsList[] = {2, 3, 4, 6, 8};
    int ncase = 0;
    check_layout3();
    check_layout6();
    check_exp_ops();
    check_hadamard();
    check_kv8();
    for (int bi = 0; bi < (int)(sizeof bitsList / sizeof *bitsList); bi++)
        for (int si = 0; si < (int)(sizeof shapes / sizeof *shapes); si++)
            for (int ri = 0; ri < 4; ri++)
                for (int kind = 0; kind < 2; kind++) {
                    int bits = bitsList[bi], group = shapes[si][0], cols = shapes[si][1], rows = rowsList[ri];
                    if (kind == 1 && rows >= 16 && cols > 128) continue; // extremes: smaller shapes suffice
                    if (cols > 4096 && (rows == 37 || kind == 1)) continue; // long rows: 1, 6, 16 rows suffice
                    wcase c;
                    make_weights(&c, bits, group, rows, cols, kind);
                    char where[96];
                    snprintf(where, sizeof where, "B%d G%d %dx%d %s", bits, group, rows, cols, kind ? "extreme" : "random");
                    check_dequant(&c, where);
                    check_a16(&c, where);
                    check_i8(&c, 127, where);
                    check_i8(&c, 7, where);
                    free_weights(&c);
                    ncase++;
                }
    check_dense();

    // tsr_force_portable: every entry point back on the scalar path.
    {
        stat_t *s = stat_for("force_portable", "dispatch", 1);
        wcase c;
        make_weights(&c, 4, 64, 5, 256, 0);
        float x[256], xs[4], y[5], yr[5];
        make_acts(x, 256, 0, 0);
        tsr_group_sums_f32(x, 256, 64, xs);
        tsr_force_portable(1);
        s->calls++;
        s->outputs += 5;
        if (tsr_cpu_features() != 0) fail(s, "features %d under force_portable", tsr_cpu_features());
        tsr_qgemv_f32(&c.w, x, xs, y, 0, 5);
        tsr_force_portable(0);
        tsr_qgemv_f32_ref(&c.w, x, xs, yr, 0, 5);
        if (!same_bits(y, yr, sizeof y)) fail(s, "qgemv_f32 is not the reference under force_portable");
        free_weights(&c);
    }

    printf("%-5s %-17s %-9s %7s %9s  %s\n", "", "kernel", "path", "calls", "outputs", "agreement");
    for (int i = 0; i < nstats; i++) {
        stat_t *s = &stats[i];
        printf("%-5s %-17s %-9s %7ld %9ld  ", s->failures ? "FAIL" : "PASS", s->kernel, s->path, s->calls, s->outputs);
        if (s->exact) printf("bit-identical to the reference");
        else printf("max |err|/bound %.3f (ref %.3f), max |neon-ref|/magnitude %.2e", s->worst, s->worst_ref, s->rel);
        if (s->failures) printf("  (%ld failures)", s->failures);
        printf("\n");
    }
    if (variant_compared)
        printf("note: neon and neondot A8/A4 GEMV outputs differ in the last bits in %ld of %ld rows (same exact integer\n"
               "      dots, different int32 lane partitions), so the bitwise dispatch check tells the two paths apart\n",
               variant_differ, variant_compared);
    printf("neon_check: %d weight cases (bits 2/3/4/6/8, A16 + A8 + A4); A8/A4 dispatch -> %s; %s\n", ncase, dispatch_target,
           total_failures ? "FAILED" : "all passed");
    return total_failures ? 1 : 0;
}

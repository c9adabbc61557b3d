// A persistent worker pool. A run is cut into as many chunks as the pool has threads; chunk i
// is what "worker i" computes (its rows, its scratch), so results do not depend on which
// thread runs it. Threads claim chunks from one atomic counter: the caller and every worker
// that is awake take the next unclaimed chunk until none is left, and the caller waits only
// for chunks that were claimed. A worker that is asleep or descheduled (another process on
// its core) therefore costs nothing: the caller runs its chunk instead of waiting a
// scheduler time slice for it.
// Another process on a worker's core hurts twice: a worker that claimed a chunk and was then
// descheduled stalls the caller for up to a scheduler time slice (milliseconds, against ~20 µs
// per region in decode), and a worker that spins without getting chunks takes CPU time from
// the caller. So the caller watches: two stalls within STALL_WINDOW runs, or a window in which
// the workers took no chunk in at least half of the runs (of those that took the caller more
// than MISS_NS), make the pool go solo (go_solo): for a while
// the caller runs every chunk itself (the same chunks, so the same results) while the workers
// sleep, then it tries the workers again. On an idle machine spinning workers claim their
// chunks at once and never hold the caller that long, so nothing changes there.
// Workers wait for a generation counter to change. They spin for a short while (cheap
// hand-off during decode, where one token issues ~200 small parallel regions) and then block
// on a condition variable so that an idle or contended machine is not burned by spinning.
#define _GNU_SOURCE
#include "KernelsC.h"
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>
#include <numa.h>
#include <time.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define CPU_RELAX() __asm__ __volatile__("yield")
#else
#define CPU_RELAX() ((void)0)
#endif

enum { SPIN_ITERATIONS = 20000 };
/// A run whose caller waited more than STALL_NS (and more than 4× its own work) for claimed
/// chunks counts as a stall; two stalls within STALL_WINDOW runs start a solo period (go_solo).
#define STALL_NS 200000LL
#define SOLO_MIN_NS 10000000LL
#define SOLO_MAX_NS 200000000LL
#define MISS_NS 5000LL
enum { STALL_WINDOW = 64 };

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

struct tsr_pool {
    int threads;
    pthread_t *handles;
    pthread_mutex_t mutex;
    pthread_cond_t wake;
    _Atomic unsigned generation;   // bumped once per run (what sleeping workers wait on)
    _Atomic uint64_t claim;        // generation << 32 | the next unclaimed chunk of that run
    _Atomic int done;              // chunks of the current run finished
    _Atomic int stop;
    // The task of generation g sits in slot[g & 1]: a slot is rewritten only two runs later,
    // after every chunk of its run has finished.
    struct { _Atomic(tsr_task_fn) fn; _Atomic(void *) context; } slot[2];
    // Caller-only state (tsr_pool_run is called from one thread at a time).
    long long soloUntil;           // now_ns() before which runs are solo
    long long soloNs;              // the next solo period: doubles while the trigger repeats
    long long runs, soloRuns, stalls, lastStall;
    int windowRuns, windowMisses;  // runs of the current window, and those whose chunks the caller ran alone
};

typedef struct { tsr_pool *pool; int index; int numa; } worker_arg;

static void pin_to_cpu(int index) {
    cpu_set_t set;
    CPU_ZERO(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n <= 0) return;
    CPU_SET(index % n, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

// Claims and runs chunks of generation g until none is left (or a newer run has started);
// returns how many it ran.
static int run_chunks(tsr_pool *pool, unsigned g) {
    int ran = 0;
    const int n = pool->threads;
    for (;;) {
        uint64_t word = atomic_load_explicit(&pool->claim, memory_order_acquire);
        if ((unsigned)(word >> 32) != g || (int)(uint32_t)word >= n) return ran;
        // Read the task before claiming: if the claim succeeds, the run was still g throughout,
        // so its slot had not been rewritten.
        tsr_task_fn fn = atomic_load_explicit(&pool->slot[g & 1].fn, memory_order_relaxed);
        void *context = atomic_load_explicit(&pool->slot[g & 1].context, memory_order_relaxed);
        if (!atomic_compare_exchange_weak_explicit(&pool->claim, &word, word + 1,
                                                   memory_order_acq_rel, memory_order_relaxed)) continue;
        fn(context, (int)(uint32_t)word, n);
        atomic_fetch_add_explicit(&pool->done, 1, memory_order_acq_rel);
        ran++;
    }
}

static void *worker_main(void *raw) {
    worker_arg arg = *(worker_arg *)raw;
    free(raw);
    tsr_pool *pool = arg.pool;
    if (arg.numa) {
        pin_to_cpu(arg.index);
        if (numa_available() >= 0 && numa_num_configured_nodes() > 1) numa_set_localalloc();
    }
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&pool->generation, memory_order_acquire)) == seen &&
               !atomic_load(&pool->stop)) {
            if (++spins < SPIN_ITERATIONS) { CPU_RELAX(); continue; }
            pthread_mutex_lock(&pool->mutex);
            while (atomic_load(&pool->generation) == seen && !atomic_load(&pool->stop))
                pthread_cond_wait(&pool->wake, &pool->mutex);
            pthread_mutex_unlock(&pool->mutex);
        }
        if (atomic_load(&pool->stop)) return NULL;
        seen = g;
        run_chunks(pool, g);
    }
}

tsr_pool *tsr_pool_create(int threads, int numa) {
    if (threads < 1) threads = 1;
    tsr_pool *pool = calloc(1, sizeof *pool);
    if (!pool) return NULL;
    pool->threads = threads;
    pool->soloNs = SOLO_MIN_NS;
    pthread_mutex_init(&pool->mutex, NULL);
    pthread_cond_init(&pool->wake, NULL);
    pool->handles = calloc((size_t)threads, sizeof(pthread_t));
    if (numa) pin_to_cpu(0);
    for (int i = 1; i < threads; i++) {
        worker_arg *arg = malloc(sizeof *arg);
        arg->pool = pool; arg->index = i; arg->numa = numa;
        if (pthread_create(&pool->handles[i], NULL, worker_main, arg) != 0) {
            free(arg);
            pool->threads = i; // run with the workers we could start
            break;
        }
    }
    return pool;
}

int tsr_pool_threads(const tsr_pool *pool) { return pool->threads; }

// Starts a solo period: SOLO_MIN_NS after a clean window, doubling (to SOLO_MAX_NS) while the
// workers keep failing each time they are tried again, so a short hiccup costs little and a
// process that holds a core for good costs one probe window per SOLO_MAX_NS.
static void go_solo(tsr_pool *pool) {
    pool->soloUntil = now_ns() + pool->soloNs;
    pool->soloNs = pool->soloNs * 2 < SOLO_MAX_NS ? pool->soloNs * 2 : SOLO_MAX_NS;
}

void tsr_pool_run(tsr_pool *pool, tsr_task_fn fn, void *context) {
    const int n = pool->threads;
    if (n == 1) { fn(context, 0, 1); return; }
    pool->runs++;
    if (pool->soloUntil) {
        if (now_ns() < pool->soloUntil) {
            pool->soloRuns++;
            for (int i = 0; i < n; i++) fn(context, i, n);
            return;
        }
        pool->soloUntil = 0; // try the workers again
    }
    const long long start = now_ns();
    // The caller is the only writer of generation, slot, done and the claim's generation.
    unsigned g = atomic_load_explicit(&pool->generation, memory_order_relaxed) + 1;
    atomic_store_explicit(&pool->slot[g & 1].fn, fn, memory_order_relaxed);
    atomic_store_explicit(&pool->slot[g & 1].context, context, memory_order_relaxed);
    atomic_store_explicit(&pool->done, 0, memory_order_relaxed);
    atomic_store_explicit(&pool->claim, (uint64_t)g << 32, memory_order_release);
    pthread_mutex_lock(&pool->mutex);
    atomic_store_explicit(&pool->generation, g, memory_order_release);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mutex);
    const int ran = run_chunks(pool, g);
    const long long own = now_ns() - start;
    // A miss: the caller ran every chunk of a region long enough (MISS_NS) that a spinning
    // worker would have claimed one. Tiny regions say nothing: the caller may take every chunk
    // before a worker on an idle core has seen the run.
    const int missed = ran == n && own > MISS_NS;
    if (++pool->windowRuns == STALL_WINDOW) {
        if (2 * (pool->windowMisses + missed) >= STALL_WINDOW) go_solo(pool);
        else pool->soloNs = SOLO_MIN_NS; // a clean window: the workers keep up again
        pool->windowRuns = pool->windowMisses = 0;
    } else {
        pool->windowMisses += missed;
    }
    // Every chunk is claimed now; wait for those still running on other threads.
    if (atomic_load_explicit(&pool->done, memory_order_acquire) == n) return;
    int spins = 0;
    while (atomic_load_explicit(&pool->done, memory_order_acquire) < n) {
        if (++spins < SPIN_ITERATIONS) CPU_RELAX(); else sched_yield();
    }
    const long long waited = now_ns() - start - own;
    if (waited > STALL_NS && waited > 4 * own) {
        pool->stalls++;
        if (pool->lastStall && pool->runs - pool->lastStall <= STALL_WINDOW) go_solo(pool);
        pool->lastStall = pool->runs;
    }
}

void tsr_pool_stats(const tsr_pool *pool, long long *runs, long long *soloRuns, long long *stalls) {
    *runs = pool->runs;
    *soloRuns = pool->soloRuns;
    *stalls = pool->stalls;
}

void tsr_pool_destroy(tsr_pool *pool) {
    if (!pool) return;
    pthread_mutex_lock(&pool->mutex);
    atomic_store(&pool->stop, 1);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mutex);
    for (int i = 1; i < pool->threads; i++) pthread_join(pool->handles[i], NULL);
    pthread_mutex_destroy(&pool->mutex);
    pthread_cond_destroy(&pool->wake);
    free(pool->handles);
    free(pool);
}

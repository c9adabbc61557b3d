// A persistent worker pool. The caller is worker 0; workers 1..n-1 wait for a generation
// counter to change. They spin for a short while (cheap hand-off during decode, where one
// token issues ~200 small parallel regions) and then block on a condition variable so that
// an idle or contended machine is not burned by spinning.
#define _GNU_SOURCE
#include "KernelsC.h"
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>
#include <numa.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define CPU_RELAX() __asm__ __volatile__("yield")
#else
#define CPU_RELAX() ((void)0)
#endif

enum { SPIN_ITERATIONS = 20000 };

struct tsr_pool {
    int threads;
    pthread_t *handles;
    pthread_mutex_t mutex;
    pthread_cond_t wake;
    _Atomic unsigned generation;   // bumped once per run
    _Atomic int pending;           // workers still running the current task
    _Atomic int stop;
    tsr_task_fn fn;
    void *context;
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
        pool->fn(pool->context, arg.index, pool->threads);
        atomic_fetch_sub_explicit(&pool->pending, 1, memory_order_acq_rel);
    }
}

tsr_pool *tsr_pool_create(int threads, int numa) {
    if (threads < 1) threads = 1;
    tsr_pool *pool = calloc(1, sizeof *pool);
    if (!pool) return NULL;
    pool->threads = threads;
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

void tsr_pool_run(tsr_pool *pool, tsr_task_fn fn, void *context) {
    if (pool->threads == 1) { fn(context, 0, 1); return; }
    pool->fn = fn;
    pool->context = context;
    atomic_store_explicit(&pool->pending, pool->threads - 1, memory_order_release);
    pthread_mutex_lock(&pool->mutex);
    atomic_fetch_add_explicit(&pool->generation, 1, memory_order_acq_rel);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mutex);
    fn(context, 0, pool->threads);
    int spins = 0;
    while (atomic_load_explicit(&pool->pending, memory_order_acquire) > 0) {
        if (++spins < SPIN_ITERATIONS) CPU_RELAX(); else sched_yield();
    }
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

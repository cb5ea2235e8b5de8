/* Named places for the `crash` fault's `in:` (FAULTS.md): each is a real,
 * non-inlined function of the engine library, so the crash handler's backtrace
 * has it as the first frame outside libc and soak, and the crash is titled by it
 * (`SIGSEGV in soak_test_softmax_inside`).  One carries a C++ (mangled) symbol
 * name, as MNN's functions do, so titles are demangled the way real ones are. */
#include "crash_sites.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#define SITE __attribute__((noinline, noclone, used))

/* the signal, raised in the site's own frame: a null write (SIGSEGV), abort(), or raise() */
static inline __attribute__((always_inline)) void fault_here(const char *sig) {
    if (!strcmp(sig, "abort")) abort();
    if (!strcmp(sig, "bus")) raise(SIGBUS);
    if (!strcmp(sig, "fpe")) raise(SIGFPE);
    volatile int *p = NULL;
    *p = 42;
}

SITE void soak_test_decode_step(const char *sig) {
    fault_here(sig);
    __asm__ volatile("" ::: "memory"); /* not a tail call: this frame stays */
}

SITE void soak_test_softmax_inside(const char *sig) {
    fault_here(sig);
    __asm__ volatile("" ::: "memory");
}

/* soaktest::AttentionBufExecution::onResize(char const*), mangled as g++ would */
SITE void attention_on_resize(const char *sig) __asm__("_ZN8soaktest21AttentionBufExecution8onResizeEPKc");
SITE void attention_on_resize(const char *sig) {
    fault_here(sig);
    __asm__ volatile("" ::: "memory");
}

static const struct { const char *name; void (*fn)(const char *); } SITES[] = {
    {"soak_test_decode_step", soak_test_decode_step},
    {"soak_test_softmax_inside", soak_test_softmax_inside},
    {"soaktest::AttentionBufExecution::onResize", attention_on_resize},
};

int crash_site_known(const char *name) {
    for (size_t i = 0; i < sizeof SITES / sizeof SITES[0]; i++)
        if (!strcmp(SITES[i].name, name)) return 1;
    return 0;
}

void crash_in(const char *name, const char *sig) {
    for (size_t i = 0; i < sizeof SITES / sizeof SITES[0]; i++)
        if (!strcmp(SITES[i].name, name)) SITES[i].fn(sig);
}

const char *crash_site_names(void) {
    return "soak_test_decode_step, soak_test_softmax_inside, soaktest::AttentionBufExecution::onResize";
}

typedef struct {
    const char *name, *sig;
    pthread_barrier_t *go;
} crash_arg;

static void *crash_thread(void *p) {
    crash_arg *a = p;
    pthread_barrier_wait(a->go);
    crash_in(a->name, a->sig);
    return NULL;
}

void crash_in_threads(const char *name, const char *sig, int n) {
    static pthread_barrier_t go;
    static crash_arg arg;
    if (!name) name = "soak_test_decode_step";
    arg.name = name;
    arg.sig = sig;
    arg.go = &go;
    int started = 0;
    if (n > 1 && pthread_barrier_init(&go, NULL, (unsigned)n) == 0) {
        for (int i = 1; i < n; i++) {
            pthread_t t;
            if (pthread_create(&t, NULL, crash_thread, &arg) != 0) break;
            pthread_detach(t);
            started++;
        }
        if (started == n - 1) pthread_barrier_wait(&go);  /* else the threads wait forever: this one crashes */
    }
    crash_in(name, sig);
}

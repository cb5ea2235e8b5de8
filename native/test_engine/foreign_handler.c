/* What libLLVM does when PoCL's kernel compiler starts (sys::RemoveFileOnSignal
 * -> RegisterHandlers, on the first clGetPlatformIDs): SIGSEGV, SIGBUS, SIGABRT,
 * SIGFPE and SIGILL go to its own handler, flags SA_RESETHAND | SA_NODEFER |
 * SA_ONSTACK, over whatever was installed before (soak's).  When a signal comes,
 * the kernel resets its action to the default (SA_RESETHAND); the handler spends
 * hold_ms (LLVM removes its temporary files and runs its callbacks there), then,
 * with chains, puts back every action it replaced (LLVM's UnregisterHandlers)
 * and returns: the fault comes again, to those.  Without chains it only returns:
 * the fault comes again to the default action.  While it holds, a second thread
 * that faults meets the default action and ends the process at once (MNN on
 * PoCL: every worker thread runs the bad kernel together). */
#define _XOPEN_SOURCE 700  /* SA_RESETHAND, SA_NODEFER, SA_ONSTACK */
#include "foreign_handler.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <time.h>

static const int SIGS[] = {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL};
#define N_SIGS ((int)(sizeof SIGS / sizeof SIGS[0]))

static struct sigaction g_prev[N_SIGS];
static volatile int g_registered;  /* LLVM's NumRegisteredSignals */
static int g_chains, g_hold_ms;

static void on_signal(int sig) {
    (void)sig;
    int saved_errno = errno;
    if (g_hold_ms > 0) {
        struct timespec ts = {g_hold_ms / 1000, (long)(g_hold_ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {}
    }
    if (g_chains && __sync_lock_test_and_set(&g_registered, 0))
        for (int i = 0; i < N_SIGS; i++) sigaction(SIGS[i], &g_prev[i], NULL);
    errno = saved_errno;
}

void foreign_handler_install(int chains, int hold_ms) {
    if (g_registered) return;
    g_chains = chains;
    g_hold_ms = hold_ms;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND | SA_NODEFER | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < N_SIGS; i++) sigaction(SIGS[i], &sa, &g_prev[i]);
    g_registered = 1;
}

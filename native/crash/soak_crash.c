/* soak's fatal-signal handler; see soak_crash.h for what it writes and why.
 *
 * In the handler: write(2), open/read/close(2) on /proc/self/maps, gettid,
 * nanosleep, sigaction, raise, and the unwinder (warmed up at install).  No
 * malloc, no stdio, no dladdr (it takes the loader's lock).  Its buffers are
 * static (one thread dumps): it runs on the crashing thread's own stack when
 * that thread has no alternate one (any thread but the installing one).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "soak_crash.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>
#include <unwind.h>

#define MAX_FRAMES 48
#define MODULE_LEN 480

static const int HOOKED[] = {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL};
#define N_HOOKED ((int)(sizeof HOOKED / sizeof HOOKED[0]))

/* Where a signal goes after soak's dump, per hooked signal: [0] the action before
 * soak_crash_install, then each action soak_crash_reassert took the signal back
 * from, oldest first.  The handler hands over newest first, one step per entry
 * (g_next: how many are left), then to the default action. */
#define MAX_CHAIN 8
static struct sigaction g_chain[N_HOOKED][MAX_CHAIN];
static volatile int g_depth[N_HOOKED];
static volatile int g_next[N_HOOKED];
static struct sigaction g_sa;     /* soak's own action */
static volatile int g_fd = 2;
static int g_installed;
static volatile int g_dumper;     /* tid of the thread writing its dump (0: none yet) */
static volatile int g_dump_done;

/* the crashing thread's frames (static: the alternate stack may be small) */
static uintptr_t g_pcs[MAX_FRAMES + 8];
static uintptr_t g_frames[MAX_FRAMES];
static uintptr_t g_offsets[MAX_FRAMES];
static char g_modules[MAX_FRAMES][MODULE_LEN];
static char g_altstack[64 * 1024];
static char g_maps_buf[2048], g_maps_line[1024];

/* ---- output without stdio ---- */

typedef struct { char buf[1024]; size_t n; } out_t;
static out_t g_out;  /* the dumping thread's */

static void out_flush(out_t *o) {
    size_t done = 0;
    while (done < o->n) {
        ssize_t w = write(g_fd, o->buf + done, o->n - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        done += (size_t)w;
    }
    o->n = 0;
}

static void out_str(out_t *o, const char *s) {
    for (; *s; s++) {
        if (o->n == sizeof o->buf) out_flush(o);
        o->buf[o->n++] = *s;
    }
}

static void out_hex(out_t *o, uintptr_t v, int width) {
    char tmp[2 * sizeof v + 1];
    int n = 0;
    do { tmp[n++] = "0123456789abcdef"[v & 15]; v >>= 4; } while (v);
    while (n < width) tmp[n++] = '0';
    char rev[sizeof tmp + 1];
    for (int i = 0; i < n; i++) rev[i] = tmp[n - 1 - i];
    rev[n] = 0;
    out_str(o, rev);
}

static void out_dec(out_t *o, long v) {
    char tmp[24];
    int n = 0, neg = v < 0;
    unsigned long u = neg ? (unsigned long)(-v) : (unsigned long)v;
    do { tmp[n++] = (char)('0' + u % 10); u /= 10; } while (u);
    if (neg) out_str(o, "-");
    char rev[sizeof tmp + 1];
    for (int i = 0; i < n; i++) rev[i] = tmp[n - 1 - i];
    rev[n] = 0;
    out_str(o, rev);
}

static const char *sig_name(int sig) {
    switch (sig) {
    case SIGSEGV: return "SIGSEGV";
    case SIGBUS: return "SIGBUS";
    case SIGABRT: return "SIGABRT";
    case SIGFPE: return "SIGFPE";
    case SIGILL: return "SIGILL";
    default: return "SIG?";
    }
}

/* ---- the faulting pc and the unwinder ---- */

static uintptr_t context_pc(void *ucv) {
    ucontext_t *uc = (ucontext_t *)ucv;
    if (!uc) return 0;
#if defined(__x86_64__)
    return (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
#elif defined(__i386__)
    return (uintptr_t)uc->uc_mcontext.gregs[REG_EIP];
#elif defined(__aarch64__)
    return (uintptr_t)uc->uc_mcontext.pc;
#elif defined(__arm__)
    return (uintptr_t)uc->uc_mcontext.arm_pc;
#elif defined(__riscv)
    return (uintptr_t)uc->uc_mcontext.__gregs[0];
#else
    return 0;
#endif
}

typedef struct { uintptr_t *pcs; int n, max; } unwind_t;

static _Unwind_Reason_Code collect(struct _Unwind_Context *ctx, void *arg) {
    unwind_t *st = (unwind_t *)arg;
    uintptr_t ip = (uintptr_t)_Unwind_GetIP(ctx);
    if (st->n >= st->max) return _URC_END_OF_STACK;
    if (ip == 0) return _URC_END_OF_STACK;
    st->pcs[st->n++] = ip;
    return _URC_NO_REASON;
}

/* Frame #00 is the faulting pc; its callers are what the unwinder found past the
 * signal frame.  When the unwinder did not cross it, every frame it found follows
 * (the handler's own frames are in soak's module, which the title skips). */
static int gather_frames(void *ucv) {
    unwind_t st = {g_pcs, 0, (int)(sizeof g_pcs / sizeof g_pcs[0])};
    _Unwind_Backtrace(collect, &st);
    uintptr_t pc = context_pc(ucv);
    int n = 0, start = -1;
    for (int i = 0; i < st.n && pc; i++)
        if (g_pcs[i] == pc || g_pcs[i] == pc + 1) { start = i + 1; break; }
    if (pc) g_frames[n++] = pc;
    for (int i = start < 0 ? 0 : start; i < st.n && n < MAX_FRAMES; i++) g_frames[n++] = g_pcs[i];
    return n;
}

/* ---- modules from /proc/self/maps ---- */

static int parse_hex(const char **p, uintptr_t *v) {
    uintptr_t x = 0;
    int digits = 0;
    for (;; (*p)++, digits++) {
        char c = **p;
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) break;
        x = x * 16 + (uintptr_t)d;
    }
    *v = x;
    return digits > 0;
}

static void skip_field(const char **p) {
    while (**p == ' ') (*p)++;
    while (**p && **p != ' ') (*p)++;
    while (**p == ' ') (*p)++;
}

static void map_line(const char *line, int n) {
    const char *p = line;
    uintptr_t start, end, offset;
    if (!parse_hex(&p, &start) || *p++ != '-' || !parse_hex(&p, &end)) return;
    skip_field(&p);                        /* perms */
    if (!parse_hex(&p, &offset)) return;
    skip_field(&p);                        /* dev */
    skip_field(&p);                        /* inode, then the path (may be empty) */
    for (int i = 0; i < n; i++) {
        if (g_frames[i] < start || g_frames[i] >= end || g_modules[i][0]) continue;
        g_offsets[i] = g_frames[i] - start + offset;
        size_t k = 0;
        const char *name = *p ? p : "[anon]";
        for (; name[k] && k + 1 < MODULE_LEN; k++) g_modules[i][k] = name[k];
        g_modules[i][k] = 0;
    }
}

static void find_modules(int n) {
    for (int i = 0; i < n; i++) { g_modules[i][0] = 0; g_offsets[i] = g_frames[i]; }
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    char *buf = g_maps_buf, *line = g_maps_line;
    size_t len = 0;
    for (;;) {
        ssize_t r = read(fd, buf, sizeof g_maps_buf);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        for (ssize_t i = 0; i < r; i++) {
            if (buf[i] == '\n') {
                line[len] = 0;
                map_line(line, n);
                len = 0;
            } else if (len + 1 < sizeof g_maps_line) {
                line[len++] = buf[i];
            }
        }
    }
    if (len) { line[len] = 0; map_line(line, n); }
    close(fd);
}

/* ---- the handler ---- */

static void dump(int sig, siginfo_t *si, void *ucv, int tid) {
    out_t *o = &g_out;
    o->n = 0;
    out_str(o, "*** soak: fatal signal ");
    out_dec(o, sig);
    out_str(o, " (");
    out_str(o, sig_name(sig));
    out_str(o, "), code ");
    out_dec(o, si ? si->si_code : 0);
    out_str(o, ", fault addr 0x");
    out_hex(o, si ? (uintptr_t)si->si_addr : 0, 1);
    out_str(o, ", pid ");
    out_dec(o, (long)getpid());
    out_str(o, ", tid ");
    out_dec(o, tid);
    out_str(o, " ***\n");
    out_flush(o);  /* the header first: if unwinding faults, it is out */
    int n = gather_frames(ucv);
    find_modules(n);
    out_str(o, "soak backtrace (file offsets):\n");
    for (int i = 0; i < n; i++) {
        out_str(o, "    #");
        if (i < 10) out_str(o, "0");
        out_dec(o, i);
        out_str(o, " fo ");
        out_hex(o, g_offsets[i], 16);
        out_str(o, "  ");
        out_str(o, g_modules[i][0] ? g_modules[i] : "[unknown]");
        out_str(o, "\n");
    }
    out_str(o, "*** soak: end of backtrace ***\n");
    out_flush(o);
}

static int hooked_index(int sig) {
    for (int i = 0; i < N_HOOKED; i++)
        if (HOOKED[i] == sig) return i;
    return -1;
}

/* One step down the chain: the newest action not handed the signal yet (Python's
 * faulthandler, debuggerd, a library's handler soak took the signal back from),
 * then the default.  Every entry of the handler takes a step, so a handler that
 * puts soak's back and returns (LLVM's does) passes the signal on, not in a loop. */
static void hand_over(int sig) {
    int k = hooked_index(sig);
    int pos = k >= 0 ? __sync_sub_and_fetch(&g_next[k], 1) : -1;
    if (pos >= 0 && pos < MAX_CHAIN) {
        sigaction(sig, &g_chain[k][pos], NULL);
    } else {
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        sigemptyset(&dfl.sa_mask);
        sigaction(sig, &dfl, NULL);
    }
}

static void handler(int sig, siginfo_t *si, void *ucv) {
    int saved_errno = errno;
    int tid = (int)syscall(SYS_gettid);
    int prev = __sync_val_compare_and_swap(&g_dumper, 0, tid);
    if (prev == 0) {
        dump(sig, si, ucv, tid);
        g_dump_done = 1;
    } else if (prev != tid) {
        /* another thread crashed first: let it write its dump, then hand the signal
         * over itself (that usually ends the process while this thread waits) */
        struct timespec ts = {0, 10 * 1000 * 1000};
        for (int i = 0; i < 300 && !g_dump_done; i++) nanosleep(&ts, NULL);
        for (int i = 0; i < 100; i++) nanosleep(&ts, NULL);
    }
    hand_over(sig);
    /* A fault the kernel raised comes again when the instruction re-runs, now to
     * the next action; a sent one (abort, raise, kill) is sent again: it is
     * blocked until this handler returns, then delivered to that action. */
    if (!si || si->si_code <= 0) raise(sig);
    errno = saved_errno;
}

int soak_crash_install(int fd) {
    g_fd = fd;
    if (g_installed) return 0;
    /* load and resolve the unwinder now, not in the handler */
    uintptr_t warm[4];
    unwind_t st = {warm, 0, 4};
    _Unwind_Backtrace(collect, &st);
    stack_t old_stack;
    if (sigaltstack(NULL, &old_stack) == 0 && (old_stack.ss_flags & SS_DISABLE)) {
        stack_t ss;
        memset(&ss, 0, sizeof ss);
        ss.ss_sp = g_altstack;
        ss.ss_size = sizeof g_altstack;
        sigaltstack(&ss, NULL);
    }
    memset(&g_sa, 0, sizeof g_sa);
    g_sa.sa_sigaction = handler;
    g_sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&g_sa.sa_mask);
    for (int i = 0; i < N_HOOKED; i++) {
        if (sigaction(HOOKED[i], &g_sa, &g_chain[i][0]) != 0) return -1;
        g_depth[i] = g_next[i] = 1;
    }
    g_installed = 1;
    return 0;
}

static int is_ours(const struct sigaction *sa) {
    return (sa->sa_flags & SA_SIGINFO) && sa->sa_sigaction == handler;
}

/* Which replacements soak's goes back over: the default action, and a handler that
 * resets the signal to it when it runs (SA_RESETHAND: libLLVM's), which leaves other
 * threads that fault meanwhile to die unseen.  Any other handler stays first: it may
 * recover (PoCL's SIGFPE handler steps over a kernel's integer division by zero,
 * LLVM's CrashRecoveryContext jumps out), and hands on what it does not handle. */
static int takes_back(const struct sigaction *sa) {
    if (sa->sa_flags & SA_SIGINFO) return (sa->sa_flags & SA_RESETHAND) != 0;
    return sa->sa_handler == SIG_DFL || (sa->sa_handler != SIG_IGN && (sa->sa_flags & SA_RESETHAND));
}

/* "SEGV, BUS (/lib/libLLVM-15.so.1)": what replaced soak's, for the note */
static void describe_taker(char *line, size_t cap, size_t *len, const struct sigaction *sa, const char *sigs) {
    const char *who = "the default action";
    Dl_info info;
    void *fn = (sa->sa_flags & SA_SIGINFO) ? (void *)sa->sa_sigaction : (void *)sa->sa_handler;
    if (sa->sa_handler == SIG_IGN) who = "ignore";
    else if (sa->sa_handler != SIG_DFL)
        who = dladdr(fn, &info) && info.dli_fname ? info.dli_fname : "an unknown module";
    int w = snprintf(line + *len, cap - *len, "%s%s (%s)", *len ? "; " : "", sigs, who);
    if (w > 0) *len = *len + (size_t)w < cap ? *len + (size_t)w : cap - 1;
}

int soak_crash_reassert(void) {
    if (!g_installed) return 0;
    int taken = 0;
    struct sigaction cur[N_HOOKED];
    for (int i = 0; i < N_HOOKED; i++) {
        if (sigaction(HOOKED[i], NULL, &cur[i]) != 0 || is_ours(&cur[i]) || !takes_back(&cur[i])) continue;
        int d = g_depth[i];
        if (d == MAX_CHAIN) d--;  /* a full chain keeps its newest entry */
        g_chain[i][d] = cur[i];
        __sync_synchronize();     /* the entry, then the count the handler reads */
        g_depth[i] = d + 1;
        g_next[i] = d + 1;
        sigaction(HOOKED[i], &g_sa, NULL);
        taken |= 1 << i;
    }
    if (!taken) return 0;
    /* one note for the log: which signals, taken back from whom */
    char line[1024];
    size_t len = 0;
    for (int i = 0; i < N_HOOKED; i++) {
        if (!(taken & (1 << i))) continue;
        int seen = 0;
        for (int j = 0; j < i; j++)
            seen |= (taken & (1 << j)) && cur[j].sa_handler == cur[i].sa_handler;
        if (seen) continue;
        char sigs[64];
        size_t n = 0;
        for (int j = i; j < N_HOOKED; j++) {
            if (!(taken & (1 << j)) || cur[j].sa_handler != cur[i].sa_handler) continue;
            /* SEGV, not SIGSEGV: the note is no crash line to soak's log patterns */
            int w = snprintf(sigs + n, sizeof sigs - n, "%s%s", n ? ", " : "", sig_name(HOOKED[j]) + 3);
            if (w > 0 && n + (size_t)w < sizeof sigs) n += (size_t)w;
        }
        describe_taker(line, sizeof line, &len, &cur[i], sigs);
    }
    char msg[1200];
    int m = snprintf(msg, sizeof msg,
                     "soak: the fatal-signal handler had been replaced: %s; soak's runs first again, "
                     "then hands the signal over to it\n", line);
    if (m > 0) {
        size_t want = (size_t)m < sizeof msg ? (size_t)m : sizeof msg - 1;
        ssize_t w = write(g_fd, msg, want);
        (void)w;
    }
    return taken;
}

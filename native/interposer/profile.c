/* --cl-profile (SOAK_CL_PROFILE=1): device time per kernel and transfer, device idle gaps,
 * host time per entry point.
 *
 * Where timed commands run: SOAK_CL_PROFILE_QUEUE=engine (the default) gives the queues the engine
 * creates CL_QUEUE_PROFILING_ENABLE and times in place; =twin leaves them as the engine made them and
 * runs each timed command on a profiling twin of its queue, in the engine's order (twin.c: for a
 * driver where a profiling queue makes every launch slower, timed or not).  Every enqueue is
 * counted (per kernel name and work sizes, or per entry point for other commands).  Timed commands
 * get an event (the engine's, retained, or one of ours, released here): each kernel name's and
 * other entry point's first in a window, and one other in N per kernel name (per entry point for
 * transfers, maps, markers: their events cost as a launch's, 24 a token in a 61M Qwen2's decode;
 * on twins a map, unmap, marker or barrier stays untimed) at a jittered interval from a fixed seed:
 * N is SOAK_CL_PROFILE_SAMPLE (default 16; 1: every launch, in place),
 * fixed with SOAK_CL_PROFILE_BUDGET=0, else adapted per kernel name and phase at each window's
 * end so that the profiler's own host time (timed launches beyond untimed ones, reading events,
 * writing records: `cost_ns`) stays within the budget (default 5 %) of the phase's wall time
 * (adapt()).  An untimed launch reads no clock (host time of launches is sampled, 1 in
 * SOAK_HOST_EVERY), takes no lock and hashes no string (a per-thread cache holds its slot).  An event per launch is what costs on a GPU
 * driver (NVIDIA H200, 44M Qwen2 decode: about 2x slower with one per launch).  A launch at a size
 * (work-items) more than a step or two (SIZE_STEP) from every size its kernel was timed at is
 * timed too.  Launches timed for coverage (a kernel's first in the window, a new size) count with
 * their own time but are no random sample: the untimed launches of a shape get the mean of the
 * sampler's picks of it in this window, topped up with its coverage launches (less their cold
 * start) where the picks are few (shape_mean), else earlier windows', else the line between the
 * kernel's nearest timed sizes (shape_interpolate).
 * Events wait in a FIFO and are read
 * when complete, without blocking: the complete ones at the head once 32 wait, all complete
 * ones at clFinish/clWaitForEvents.  Times are aggregated per window (the reader's epoch, one soak
 * iteration; a command counts in the window it was enqueued in) and written as one `profile`
 * record once the window has ended (an enqueue of a later epoch came) and its last command was
 * read (or at exit, or when yet another window begins): per kernel name + global/local size
 * count, timed, total (estimated when not every launch was timed) and p50/p99 device ns of the timed;
 * per transfer entry point count, bytes and device ns; busy device ns (timed commands' union plus
 * the untimed launches' estimate), span (first timed start to last timed end) and idle = span - busy;
 * host ns per entry point.  See FORMAT.md. */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "soak_interposer.h"

#define PENDING_MAX 8192   /* events waiting to complete; beyond: dropped untimed */
#define PROF_SLOTS 512     /* kinds of command per window; beyond: folded into "other" */
#define HIST_SUB 4         /* histogram buckets per power of two */
#define HIST_N (64 * HIST_SUB)
#define RECORD_TOP 48      /* commands listed per record, by total device time */
#define DRAIN_BATCH 32     /* read completed events once this many wait: one status query per event,
                              not one per enqueue while the device lags behind */

typedef struct {
    cl_event ev;
    int own;
    int slot;
    int win;    /* windows[] index; -1: its window was written already (untimed there) */
    int forced; /* timed for coverage (a kernel's first launch in the window, a new size), not by the
                   sampler: its time is measured, but it is no random sample of the others */
} pending;

typedef struct {
    int used;
    uint32_t api;
    uint32_t dim;
    uint64_t gws[3], lws[3];
    char name[96];
    uint32_t fam;                                   /* name_hash(name); not a kernel: NAME_SLOTS + api */
    uint64_t count, timed, total_ns, bytes, max_ns; /* count: every enqueue; the rest: the timed ones */
    uint64_t pre, at_last; /* count before the window's first timed command, and at its last: the
                              untimed ones outside those two ran outside the timed device span */
    uint64_t rtimed, rtotal_ns;                     /* the sampler's picks among the timed (random samples) */
    double cold_sum, cold_sq;                       /* history: coverage launches' mean beyond the picks' in */
    uint64_t cold_n;                                /* the windows that had both (not the shape's first) */
    uint32_t hist[HIST_N];
} prof_slot;

/* a command's key: entry point, kernel name, work sizes */
typedef struct {
    uint32_t api, dim;
    const uint64_t *gws, *lws;
    const char *name;
} prof_key;

/* kernel names per kernel object, so a thread's first launch of a kernel another thread launched
 * asks the driver nothing; cleared when a kernel is released (soak_prof_kernel_gen) */
#define KCACHE 256
typedef struct {
    const void *kernel;
    uint64_t gen;
    char name[96];
} kcache_entry;
static kcache_entry kcache[KCACHE];
uint64_t soak_prof_kernel_gen = 1; /* objects.c bumps it when a kernel object goes away */
static uint64_t serial = 1;        /* the current window's serial: slot numbers in kcache belong to it */
/* per kernel name (hashed; names sharing an entry share it): the last window that timed one of
 * its launches because it was the name's first there */
#define NAME_SLOTS 1024
/* families: kernel names by hash, then one per entry point of the other commands (never sharing a
 * kernel name's entry) */
#define FAM_N (NAME_SLOTS + SOAK_N_API)
static uint64_t name_timed[FAM_N];
static uint32_t name_hash(const char *name)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *p = name; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    return (uint32_t)(h % NAME_SLOTS);
}

static uint64_t sample_every = 16; /* SOAK_CL_PROFILE_SAMPLE: the fixed rate, or the budget's first */
static double budget = 0.05;       /* SOAK_CL_PROFILE_BUDGET (percent / 100); 0: the rate stays fixed */
static uint64_t rng = 0x9E3779B97F4A7C15ull;

/* per kernel family: the size classes (work-items in steps of SIZE_STEP) it has a timed launch in;
 * a launch whose class and both neighbours have none is timed (`forced`), so every untimed shape
 * lies within a few steps of a timed one (shape_interpolate) */
#define SIZE_STEP 1.25
#define SIZE_CLASSES 128
static uint64_t size_known[FAM_N][SIZE_CLASSES / 64];
static uint32_t size_class(uint32_t dim, const uint64_t *g)
{
    double n = 1;
    for (uint32_t i = 0; i < dim; i++)
        n *= (double)(g[i] ? g[i] : 1);
    double c = log(n) / log(SIZE_STEP);
    return c < 1 ? 1 : c > SIZE_CLASSES - 2 ? SIZE_CLASSES - 2 : (uint32_t)c;
}
static int size_near(uint32_t fam, uint32_t c)
{
    for (uint32_t k = c - 1; k <= c + 1; k++)
        if (__atomic_load_n(&size_known[fam][k / 64], __ATOMIC_RELAXED) & (1ull << (k % 64)))
            return 1;
    return 0;
}
static void size_mark(uint32_t fam, uint32_t c)
{
    __atomic_fetch_or(&size_known[fam][c / 64], 1ull << (c % 64), __ATOMIC_RELAXED);
}

/* the sampler, per kernel family (kernel name, by its name_timed entry): untimed launches before
 * its next timed one, and its rate (1 in N) per phase; 0: not set yet (sample_every) */
#define PHASE_N 8
#define RATE_MAX 1000000
static uint32_t fam_skip[FAM_N];
static uint32_t fam_rate[PHASE_N][FAM_N];
static double untimed_host_mean; /* host ns of an untimed launch over earlier windows (the cost's baseline) */
static double timed_host_mean;   /* ... of a timed one */
/* the cost counts a launch's host time up to 4x these means (+2 us): a thread descheduled in
 * the middle of a launch is not the profiler's cost (host_ns still gets the whole time) */
static uint64_t timed_cap, untimed_cap;
#define BUDGET_AIM 0.8 /* the rates aim at this share of the budget: noise stays within it */
#define COVER_MAX 64
static uint32_t cover_every[PHASE_N]; /* coverage in 1 window of the phase in this many (0: every one) */
static uint64_t phase_windows[PHASE_N];
static int cover_now = 1;             /* the current window times each kernel name's first launch */

/* means over every window written so far, per command key: the estimate for launches a window
 * did not time */
static prof_slot *history;

/* untimed launches before the next sampled one: uniform in [0, 2N-2] (mean N-1), xorshift64 */
static uint64_t next_skip(uint64_t every)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return rng % (2 * every - 1);
}
static prof_slot *history_used[PROF_SLOTS]; /* its slots in use, in the order they were taken */
static size_t history_n;

static pthread_mutex_t plock = PTHREAD_MUTEX_INITIALIZER;
static pending ring[PENDING_MAX];
static size_t head, tail; /* ring[head..tail) pending */
static size_t drain_at = DRAIN_BATCH; /* pending count at which the enqueue path reads events next */
typedef struct {
    int open;
    int timed_seen; /* a timed command was enqueued in it (the slots' pre counts are set) */
    uint64_t epoch, phase, busy, first_start, last_end, dropped, failed, pending;
    uint64_t host_first, host_last; /* CLOCK_MONOTONIC: first call's entry, last call's exit */
    /* the profiler's own cost: host ns of timed kernel launches and of host-sampled untimed ones
     * (atomics: added at each such launch's exit), and ns spent reading events and writing records */
    uint64_t timed_host_ns, timed_host_n, untimed_host_ns, untimed_host_n, drain_ns, flush_ns;
    uint64_t drain_wall_ns, flush_wall_ns; /* the same two by the wall clock (a driver call that waits) */
    uint64_t twin_ns, twin_n; /* transfers timed on twin queues: their redirection's host ns, how many */
    uint32_t cover_every; /* coverage in 1 window of its phase in this many */
    prof_slot *slots;
    /* its slots in use, in the order they were taken: ending a window reads and clears only these,
     * not the 600 KB table (cold in cache after the engine's work: 100 us on PoCL's host) */
    prof_slot *taken[PROF_SLOTS];
    size_t taken_n;
    uint64_t *host_start, *host_end; /* host_ns per entry point when the window began / ended */
} window;

static window windows[2]; /* the current window and the one before it, until its commands are read */
static int cur;
static int ready;
uint64_t soak_prof_epoch, soak_prof_phase, soak_prof_last_ns; /* the current window's key; last call's exit */

typedef cl_int(CL_API_CALL *pfn_event_info)(cl_event, cl_uint, size_t, void *, size_t *);
typedef cl_int(CL_API_CALL *pfn_event1)(cl_event);

static int bucket(uint64_t ns)
{
    if (ns < HIST_SUB)
        return (int)ns;
    int e = 63 - __builtin_clzll(ns);                       /* ns in [2^e, 2^(e+1)) */
    int sub = (int)((ns >> (e >= 2 ? e - 2 : 0)) & (HIST_SUB - 1));
    int b = e * HIST_SUB + sub;
    return b < HIST_N ? b : HIST_N - 1;
}

static uint64_t bucket_value(int b) /* the bucket's midpoint */
{
    if (b < HIST_SUB)
        return (uint64_t)b;
    int e = b / HIST_SUB, sub = b % HIST_SUB;
    uint64_t lo = (1ull << e) + ((uint64_t)sub << (e >= 2 ? e - 2 : 0));
    uint64_t width = e >= 2 ? 1ull << (e - 2) : 1;
    return lo + width / 2;
}

static uint64_t quantile(const prof_slot *s, double q)
{
    uint64_t want = (uint64_t)(q * (double)s->timed + 0.5), seen = 0;
    if (want < 1)
        want = 1;
    for (int b = 0; b < HIST_N; b++) {
        seen += s->hist[b];
        if (seen >= want)
            return bucket_value(b) < s->max_ns ? bucket_value(b) : s->max_ns;
    }
    return s->max_ns;
}

void soak_profile_init(void)
{
    for (int w = 0; w < 2; w++) {
        windows[w].slots = calloc(PROF_SLOTS, sizeof(prof_slot));
        windows[w].host_start = calloc(SOAK_N_API, sizeof(uint64_t));
        windows[w].host_end = calloc(SOAK_N_API, sizeof(uint64_t));
        if (!windows[w].slots || !windows[w].host_start || !windows[w].host_end) {
            soak_g.profile = 0;
            return;
        }
    }
    history = calloc(PROF_SLOTS, sizeof(prof_slot));
    const char *v = getenv("SOAK_CL_PROFILE_SAMPLE");
    if (v && *v) {
        char *end;
        unsigned long long n = strtoull(v, &end, 10);
        if (*end || n < 1 || n > 1000000)
            fprintf(stderr, "soak-interposer: SOAK_CL_PROFILE_SAMPLE=%s: not a whole number from 1 to 1000000; "
                            "timing 1 kernel launch in %llu\n", v, (unsigned long long)sample_every);
        else
            sample_every = n;
    }
    v = getenv("SOAK_CL_PROFILE_BUDGET");
    if (v && *v) {
        char *end;
        double pct = strtod(v, &end);
        if (*end || !(pct >= 0 && pct <= 100))
            fprintf(stderr, "soak-interposer: SOAK_CL_PROFILE_BUDGET=%s: not a percentage from 0 to 100; "
                            "keeping the profiler's cost within %g %%\n", v, budget * 100);
        else
            budget = pct / 100;
    }
    soak_twin_init(sample_every > 1);
    if (sample_every > 1) /* each family's first pick, like every later one, after a uniform skip */
        for (int i = 0; i < FAM_N; i++)
            fam_skip[i] = (uint32_t)next_skip(sample_every);
    windows[0].open = 1;
    windows[0].host_first = soak_now_ns();
    ready = 1;
}

/* ---- queue properties ---- */

static SOAK_TLS cl_queue_properties props_buf[64];

const cl_queue_properties *soak_profile_props(const cl_queue_properties *props)
{
    if (!soak_g.profile || soak_twin_on) /* twin queues: the engine's stay as it made them */
        return props;
    size_t n = 0, found = 0;
    if (props)
        for (; props[n] && n + 3 < 62; n += 2) {
            props_buf[n] = props[n];
            props_buf[n + 1] = props[n + 1];
            if (props[n] == CL_QUEUE_PROPERTIES) {
                props_buf[n + 1] |= CL_QUEUE_PROFILING_ENABLE;
                found = 1;
            }
        }
    if (!found) {
        props_buf[n++] = CL_QUEUE_PROPERTIES;
        props_buf[n++] = CL_QUEUE_PROFILING_ENABLE;
    }
    props_buf[n] = 0;
    return props_buf;
}

/* ---- the window record ---- */

/* a table's slot s was taken: its list of slots in use (plock held) */
static void slot_taken(prof_slot *slots, prof_slot *s)
{
    if (slots == history)
        history_used[history_n++] = s;
    for (int w = 0; w < 2; w++)
        if (slots == windows[w].slots)
            windows[w].taken[windows[w].taken_n++] = s;
}

/* the slot of key k in slots (a new one when absent and create is set); -1: full or absent */
static int slot_of(prof_slot *slots, const prof_key *k, int create)
{
    uint64_t h = 1469598103934665603ull ^ k->api;
    for (const char *p = k->name; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    for (uint32_t i = 0; i < k->dim; i++)
        h = (h ^ k->gws[i] ^ (k->lws[i] << 20)) * 1099511628211ull;
    for (unsigned probe = 0; probe < PROF_SLOTS; probe++) {
        prof_slot *s = &slots[(h + probe) & (PROF_SLOTS - 1)];
        if (!s->used) {
            if (!create)
                return -1;
            s->used = 1;
            s->count = 0; /* a launch racing a window's end on another thread may have touched it */
            s->api = k->api;
            s->dim = k->dim;
            memcpy(s->gws, k->gws, sizeof s->gws);
            memcpy(s->lws, k->lws, sizeof s->lws);
            snprintf(s->name, sizeof s->name, "%s", k->name);
            s->fam = k->name[0] ? name_hash(k->name) : NAME_SLOTS + k->api;
            slot_taken(slots, s);
            return (int)(s - slots);
        }
        if (s->api == k->api && s->dim == k->dim && !memcmp(s->gws, k->gws, sizeof s->gws) &&
            !memcmp(s->lws, k->lws, sizeof s->lws) && !strcmp(s->name, k->name))
            return (int)(s - slots);
    }
    return -1;
}

static int slot_for(prof_slot *slots, const soak_call *c)
{
    static const uint64_t zero[3] = {0, 0, 0};
    /* a command without work sizes (a transfer) has none in its key: c's gws/lws are only set for launches */
    prof_key k = {c->id, c->dim, c->dim ? c->gws : zero, c->dim && c->has_lws ? c->lws : zero, c->kernel};
    return slot_of(slots, &k, 1);
}

static prof_key key_of(const prof_slot *s) { return (prof_key){s->api, s->dim, s->gws, s->lws, s->name}; }

static double items_of(const prof_slot *s) /* work-items of a launch of this shape (1: not a kernel) */
{
    double n = 1;
    for (uint32_t i = 0; i < s->dim; i++)
        n *= (double)(s->gws[i] ? s->gws[i] : 1);
    return n;
}

/* ---- estimates for the launches a window did not time ---- */

/* a shape's device ns per launch from its window slot s and history slot h (either may be 0), or
 * -1.  The sampler's picks (random positions) are the unbiased sample.  Launches timed for
 * coverage (a kernel's first in the window, a new size) tell this window's state: a kernel's
 * time can follow the context at one work size (decode attention over the KV cache, 61M Qwen2 on
 * an H100: 9 to 590 us per launch at gws 16x14 from window to window, where the window's coverage
 * launch came within 1-15 % of the every-launch run's mean: 59.3 vs 59.6 us, 14.6 vs 14.3, 445 vs
 * 490, 51.1 vs 51.5), but they come right after a phase change, where a small kernel can run a
 * few us longer.  And in prefill one kernel at one work size serves several layers' projections of
 * different depths (61M Qwen2, H100: 147 and 720 us in one window at gws Nx112), each launched once a
 * window at a size that follows the prompt, so the coverage launch is always the same layer's.  So:
 * this window's picks when it has OWN_MIN; else its few picks topped up to OWN_MIN with its coverage
 * launches' mean related to the picks as they related in earlier windows of the phase, per kernel
 * (cover_relate(): a difference, the cold start, or a ratio, another layer), else less their cold
 * start (cold_start()); else the earlier windows' picks, else their coverage launches less the cold
 * start */
#define OWN_MIN 4
static double cold_all_sum, cold_all_sq, cold_all_n; /* every shape's cold-start pairs */
/* per phase and kernel family, windows with both picks and coverage launches of a shape (the family's
 * first window left out): d = coverage mean - picks mean, r = picks mean / coverage mean */
typedef struct {
    double d_sum, d_sq, r_sum, r_sq, n;
} cover_pairs;
static cover_pairs cover_rel[PHASE_N][FAM_N];
static uint8_t fam_seen[FAM_N];
static uint64_t flush_phase; /* the phase of the window being written */

/* mean of n pairs when it stands out of their noise (3 at least, beyond 2 standard errors), else -1 */
static double significant(double sum, double sq, double n)
{
    if (n < 3)
        return -1;
    double m = sum / n, var = (sq / n - m * m) * n / (n - 1);
    return m * m * n > 4 * (var > 0 ? var : 0) ? m : -1;
}

/* the coverage launches' excess over the picks in windows that had both, the shape's first
 * window left out (a process's first launches of a kernel carry one-off costs): the shape's own
 * where it stands out of its noise, else every shape's, else none */
static double cold_start(const prof_slot *h)
{
    double m = h ? significant(h->cold_sum, h->cold_sq, (double)h->cold_n) : -1;
    if (m < 0)
        m = significant(cold_all_sum, cold_all_sq, cold_all_n);
    return m > 0 ? m : 0;
}

static double less_cold(double f, double cold) { return f - cold > 0.05 * f ? f - cold : 0.05 * f; }

/* the picks' mean from coverage mean f, by how they related in the family's earlier windows of this
 * phase: the model (difference or ratio) that varied less across them, relative to its mean; -1 with
 * fewer than 3 windows.  A cold start is a fixed excess (a difference); another layer of another
 * depth at the prompt's size is a factor (a ratio) */
static double cover_relate(uint32_t fam, double f)
{
    const cover_pairs *p = &cover_rel[flush_phase % PHASE_N][fam];
    if (p->n < 3)
        return -1;
    double dm = p->d_sum / p->n, rm = p->r_sum / p->n;
    double dv = p->d_sq / p->n - dm * dm, rv = p->r_sq / p->n - rm * rm;
    double dcv = dm != 0 ? sqrt(dv > 0 ? dv : 0) / fabs(dm) : 1e9, rcv = rm > 0 ? sqrt(rv > 0 ? rv : 0) / rm : 1e9;
    return rcv < dcv ? f * rm : less_cold(f, dm > 0 ? dm : 0);
}

/* window slot s's coverage launches' mean f and picks' mean p: 1 when it has both kinds */
static int cover_and_picks(const prof_slot *s, double *f, double *p)
{
    if (!s->rtimed || s->timed <= s->rtimed)
        return 0;
    *f = (double)(s->total_ns - s->rtotal_ns) / (double)(s->timed - s->rtimed);
    *p = (double)s->rtotal_ns / (double)s->rtimed;
    return 1;
}

/* a window's shapes with picks and coverage launches: how the two related, per phase and family */
static void cover_learn(const window *W, prof_slot *const *used, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const prof_slot *s = used[i];
        double f, p;
        if (fam_seen[s->fam] && cover_and_picks(s, &f, &p)) {
            cover_pairs *c = &cover_rel[W->phase % PHASE_N][s->fam];
            if (f > 0) {
                c->d_sum += f - p, c->d_sq += (f - p) * (f - p);
                c->r_sum += p / f, c->r_sq += (p / f) * (p / f);
                c->n++;
            }
        }
    }
    for (size_t i = 0; i < n; i++)
        if (used[i]->timed)
            fam_seen[used[i]->fam] = 1;
}

static double shape_mean(const prof_slot *s, const prof_slot *h)
{
    double wr = s ? (double)s->rtimed : 0, wR = s ? (double)s->rtotal_ns : 0;
    double wf = s ? (double)(s->timed - s->rtimed) : 0, wF = s ? (double)(s->total_ns - s->rtotal_ns) : 0;
    double hr = h ? (double)h->rtimed : 0, hR = h ? (double)h->rtotal_ns : 0;
    double hf = h ? (double)(h->timed - h->rtimed) : 0, hF = h ? (double)(h->total_ns - h->rtotal_ns) : 0;
    if (wr >= OWN_MIN)
        return wR / wr;
    if (wf > 0) {
        double c = cover_relate(s->fam, wF / wf);
        return (wR + (OWN_MIN - wr) * (c >= 0 ? c : less_cold(wF / wf, cold_start(h)))) / OWN_MIN;
    }
    if (wr + hr > 0)
        return (wR + hR) / (wr + hr);
    if (hf > 0)
        return less_cold(hF / hf, cold_start(h));
    return -1;
}

static prof_slot *history_of(const prof_slot *s)
{
    if (!history)
        return 0;
    prof_key k = key_of(s);
    int h = slot_of(history, &k, 0);
    return h >= 0 ? &history[h] : 0;
}

/* the shapes with a mean (this window's and earlier ones'), by kernel family and work-items: an
 * untimed shape of a kernel lies between two of them (decode: attention over a growing context;
 * prefill: sizes that follow the prompt) */
typedef struct {
    uint32_t fam, api;
    double items, mean;
    const char *name;
} shape_point;
static shape_point points[2 * PROF_SLOTS];
static size_t points_n;

static int by_fam_items(const void *a, const void *b)
{
    const shape_point *x = a, *y = b;
    if (x->fam != y->fam)
        return x->fam < y->fam ? -1 : 1;
    return x->items < y->items ? -1 : x->items > y->items ? 1 : 0;
}

/* used[i]'s shape_mean is mean[i] */
static void points_build(prof_slot *const *used, const double *mean, size_t n)
{
    points_n = 0;
    for (size_t i = 0; i < n; i++) { /* this window's timed shapes, with their history */
        const prof_slot *s = used[i];
        if (s->name[0] && s->timed && mean[i] >= 0)
            points[points_n++] = (shape_point){s->fam, s->api, items_of(s), mean[i], s->name};
    }
    for (size_t i = 0; history && i < history_n; i++) { /* earlier shapes this window did not time */
        const prof_slot *h = history_used[i];
        if (!h->timed || !h->name[0])
            continue;
        prof_key k = key_of(h);
        int w = slot_of(windows[cur].slots, &k, 0); /* flush_window may run on either window: */
        int o = slot_of(windows[1 - cur].slots, &k, 0); /* a point each, from its history if untimed there */
        if ((w >= 0 && windows[cur].slots[w].timed && windows[cur].slots[w].count) ||
            (o >= 0 && windows[1 - cur].slots[o].timed && windows[1 - cur].slots[o].count))
            continue;
        points[points_n++] = (shape_point){h->fam, h->api, items_of(h), shape_mean(0, h), h->name};
    }
    qsort(points, points_n, sizeof points[0], by_fam_items);
}

/* device ns of one launch of shape s from the kernel's other shapes: linear between the nearest
 * below and above in work-items; beyond them, the line through the nearest two, kept between the
 * nearest's time (a launch-bound kernel: flat) and its time scaled by work-items (compute-bound);
 * one shape alone: the geometric middle of those two; -1: no other shape of the kernel */
static double shape_interpolate(const prof_slot *s)
{
    size_t lo = 0, hi = points_n;
    while (lo < hi) { /* first point of the family */
        size_t mid = (lo + hi) / 2;
        if (points[mid].fam < s->fam)
            lo = mid + 1;
        else
            hi = mid;
    }
    double x = items_of(s);
    const shape_point *below[2] = {0, 0}, *above[2] = {0, 0};
    for (size_t i = lo; i < points_n && points[i].fam == s->fam; i++) {
        const shape_point *p = &points[i];
        if (p->api != s->api || strcmp(p->name, s->name))
            continue; /* another kernel sharing the family's hash */
        if (p->items <= x) {
            below[1] = below[0];
            below[0] = p; /* ascending: the last ones seen are the nearest */
        } else if (!above[0])
            above[0] = p;
        else if (!above[1])
            above[1] = p;
    }
    if (below[0] && above[0]) {
        double f = (x - below[0]->items) / (above[0]->items - below[0]->items);
        return below[0]->mean + f * (above[0]->mean - below[0]->mean);
    }
    const shape_point *a = below[0] ? below[0] : above[0], *b = below[0] ? below[1] : above[1];
    if (!a)
        return -1;
    double scaled = a->mean * x / a->items, flat = a->mean;
    if (!b || b->items == a->items)
        return sqrt(scaled * flat);
    double v = a->mean + (x - a->items) * (a->mean - b->mean) / (a->items - b->items);
    double lo_v = scaled < flat ? scaled : flat, hi_v = scaled < flat ? flat : scaled;
    return v < lo_v ? lo_v : v > hi_v ? hi_v : v;
}

/* with twin queues a map, unmap, marker or barrier stays on the engine's queue, never timed */
static int never_timed_on_twins(uint32_t api)
{
    return soak_twin_on && !(soak_api_flags[api] & SOAK_API_TWIN);
}

/* device ns for a slot's untimed launches: the shape's mean m (shape_mean; -1: none), else from
 * the kernel's other shapes (shape_interpolate); launches with neither are `unestimated` */
static uint64_t untimed_estimate(const prof_slot *s, double m, uint64_t *unknown)
{
    uint64_t left = s->count - s->timed;
    if (!left)
        return 0;
    if (m < 0 && s->name[0])
        m = shape_interpolate(s);
    if (m < 0) {
        if (!never_timed_on_twins(s->api)) /* no estimate is expected for those */
            *unknown += left;
        return 0;
    }
    return (uint64_t)(m * (double)left + 0.5);
}

static int by_total(const void *a, const void *b)
{
    const prof_slot *x = *(prof_slot *const *)a, *y = *(prof_slot *const *)b;
    return x->total_ns < y->total_ns ? 1 : x->total_ns > y->total_ns ? -1 : 0;
}

/* the profiler's own host time in window W that grows with the launches it times: their host
 * time beyond what untimed launches take (the event: what costs in a GPU driver; on twin queues
 * the marker and barrier too), plus reading events and redirecting transfers to twin queues;
 * W->flush_ns (ending the window before, writing its record) is the fixed part.  A timed
 * transfer's event in place is not separable from its own host time (a blocking read waits): the
 * budget counts it at a timed launch's cost */
static uint64_t timed_cost(const window *W)
{
    double base = W->untimed_host_n ? (double)W->untimed_host_ns / (double)W->untimed_host_n : untimed_host_mean;
    double extra = (double)W->timed_host_ns - base * (double)W->timed_host_n;
    return (uint64_t)(extra > 0 ? extra : 0) + W->drain_ns + W->twin_ns;
}

/* the cost budget: from window W's cost per timed launch and wall time (host span), how many
 * launches its phase can time within the budget; those beyond each kernel name's first launch
 * (timed anyway) go to the kernel families by half their share of launches, half their share of
 * device time; each family's rate for the phase follows (at once when sparser, at most twice
 * as dense per window, never denser than SOAK_CL_PROFILE_SAMPLE); plock held, after the untimed
 * estimates were added */
static void adapt(const window *W, prof_slot *const *used, size_t n, uint64_t cost, uint64_t fixed)
{
    uint64_t wall = W->host_last > W->host_first ? W->host_last - W->host_first : 0;
    if (budget <= 0 || sample_every <= 1 || !wall || !W->timed_host_n)
        return;
    static uint64_t fcount[FAM_N];
    static double fns[FAM_N];
    static uint32_t touched[FAM_N];
    size_t nf = 0;
    double all_n = 0, all_ns = 0;
    for (size_t i = 0; i < n; i++) {
        const prof_slot *s = used[i];
        /* kernel families and the other commands' entry points (sampled as they are; with twin
         * queues a map, unmap, marker or barrier is never timed) */
        if (s->api == SOAK_ID_clEnqueueNDRangeKernel ? !s->name[0] : never_timed_on_twins(s->api))
            continue;
        uint32_t f = s->fam;
        if (!fcount[f])
            touched[nf++] = f;
        fcount[f] += s->count;
        fns[f] += (double)s->total_ns;
        all_n += (double)s->count;
        all_ns += (double)s->total_ns;
    }
    double per = (double)cost / (double)(W->timed_host_n + W->twin_n);
    double allowed = BUDGET_AIM * budget * (double)wall - (double)fixed;
    uint32_t ph = (uint32_t)(W->phase % PHASE_N);
    /* coverage (each kernel name's first launch) in 1 window of the phase in N, N as small as the
     * budget allows: in a short window (a tiny model's 1 ms prefill) timing every name's first
     * launch alone can cost more than the budget */
    double cover = per * (double)nf, every = cover <= 0 ? 1 : allowed <= 0 ? COVER_MAX : cover / allowed;
    cover_every[ph] = every <= 1 ? 1 : every >= COVER_MAX ? COVER_MAX : (uint32_t)(every + 0.999);
    double spare = (per > 0 ? allowed / per : 1e18) - (double)nf / cover_every[ph];
    for (size_t i = 0; i < nf; i++) {
        uint32_t f = touched[i];
        double share = 0.5 * (double)fcount[f] / all_n + 0.5 * (all_ns > 0 ? fns[f] / all_ns : (double)fcount[f] / all_n);
        double want = spare * share;
        double target = want <= 0 ? RATE_MAX : (double)fcount[f] / want;
        /* never denser than the first rate: a driver may spend on an event where this host's clock
         * does not see it (PoCL: in its worker threads), so the budget only thins the sampling */
        uint32_t t = target >= RATE_MAX ? RATE_MAX : target <= (double)sample_every ? (uint32_t)sample_every
                                                                                 : (uint32_t)(target + 0.999);
        uint32_t old = fam_rate[ph][f] ? fam_rate[ph][f] : (uint32_t)sample_every;
        uint32_t r = t >= old ? t : (t > old / 2 ? t : old / 2);
        fam_rate[ph][f] = r;
        if (fam_skip[f] > 2 * r)
            fam_skip[f] = (uint32_t)next_skip(r);
        fcount[f] = 0;
        fns[f] = 0;
    }
}

/* writes window w's record and closes it; plock held */
static void flush_window(int w)
{
    window *W = &windows[w];
    if (!W->open)
        return;
    if (W->pending) { /* commands not read yet: untimed in this record */
        for (size_t i = head; i != tail; i++)
            if (ring[i % PENDING_MAX].win == w) {
                ring[i % PENDING_MAX].win = -1;
                W->dropped++;
            }
        W->pending = 0;
    }
    static prof_slot *used[PROF_SLOTS];
    size_t n = 0;
    for (size_t i = 0; i < W->taken_n; i++)
        if (W->taken[i]->count)
            used[n++] = W->taken[i];
    uint64_t host_total = 0;
    for (int i = 0; i < SOAK_N_API; i++)
        host_total += W->host_end[i] - W->host_start[i];
    /* untimed launches: their shape's mean; busy gets them too, idle is what the span leaves of
     * the busy time inside it */
    uint64_t unknown = 0, est_ns = 0, outside_ns = 0;
    static uint64_t est[PROF_SLOTS];
    static double mean[PROF_SLOTS];
    flush_phase = W->phase;
    for (size_t i = 0; i < n; i++) /* estimates first: they read the measured totals of other slots */
        mean[i] = shape_mean(used[i], history_of(used[i]));
    if (n) /* a window of no commands (idle) has nothing to estimate: no scan of the history */
        points_build(used, mean, n);
    for (size_t i = 0; i < n; i++)
        est[i] = untimed_estimate(used[i], mean[i], &unknown);
    cover_learn(W, used, n); /* after this window's estimates: from the next one on */
    for (size_t i = 0; i < n; i++) {
        prof_slot *s = used[i];
        if (s->timed && history) { /* this window's measured launches join the history */
            prof_key k = key_of(s);
            int h = slot_of(history, &k, 0);
            if (h < 0)
                h = slot_of(history, &k, 1);
            if (h >= 0) {
                double f, p;
                if (history[h].timed && cover_and_picks(s, &f, &p)) { /* both kinds: the cold start */
                    double d = f - p;
                    history[h].cold_sum += d;
                    history[h].cold_sq += d * d;
                    history[h].cold_n++;
                    cold_all_sum += d;
                    cold_all_sq += d * d;
                    cold_all_n++;
                }
                history[h].timed += s->timed;
                history[h].total_ns += s->total_ns;
                history[h].rtimed += s->rtimed;
                history[h].rtotal_ns += s->rtotal_ns;
            }
        }
        s->total_ns += est[i];
        est_ns += est[i];
        /* the untimed enqueued before the first timed command or after the last one ran outside
         * the device span (first timed start to last timed end): busy time that is neither idle
         * nor host-only (soak profile takes it from the host span beyond the device span) */
        uint64_t left = s->count - s->timed, out = W->timed_seen ? s->pre + (s->count - s->at_last) : left;
        if (est[i] && left)
            outside_ns += (uint64_t)((double)est[i] * (double)(out < left ? out : left) / (double)left);
    }
    uint64_t cost = timed_cost(W), kernel_n = 0;
    for (size_t i = 0; i < n; i++)
        if (used[i]->api == SOAK_ID_clEnqueueNDRangeKernel)
            kernel_n += used[i]->count;
    adapt(W, used, n, cost, W->flush_ns);
    /* by the wall clock: what the budget would see if the driver's calls waiting were its cost */
    uint64_t cost_wall = cost - W->drain_ns + W->drain_wall_ns + W->flush_wall_ns;
    cost += W->flush_ns;
    if (W->untimed_host_n) {
        double m = (double)W->untimed_host_ns / (double)W->untimed_host_n;
        untimed_host_mean = untimed_host_mean > 0 ? 0.5 * untimed_host_mean + 0.5 * m : m;
        untimed_cap = (uint64_t)(4 * untimed_host_mean) + 2000;
    }
    if (W->timed_host_n) {
        double m = (double)W->timed_host_ns / (double)W->timed_host_n;
        timed_host_mean = timed_host_mean > 0 ? 0.5 * timed_host_mean + 0.5 * m : m;
        timed_cap = (uint64_t)(4 * timed_host_mean) + 2000;
    }
    uint64_t span = W->last_end > W->first_start ? W->last_end - W->first_start : 0;
    uint64_t busy = W->busy + est_ns, inside = busy - outside_ns;
    uint64_t idle = span > inside ? span - inside : 0;
    if (n || host_total || W->dropped || W->flush_ns) {
        qsort(used, n, sizeof used[0], by_total);
        /* static (plock held): a 96 KB malloc would consolidate the driver's freed small blocks
         * first (glibc), milliseconds after a window of many launches on PoCL */
        static char rec_buf[96 * 1024];
        size_t cap = sizeof rec_buf;
        char *buf = rec_buf;
        {
            char item[512];
            soak_json j;
            soak_json_begin(&j, buf, cap, "profile");
            soak_json_common(&j, 0);
            soak_json_uint(&j, "epoch", W->epoch);
            soak_json_uint(&j, "phase", W->phase);
            soak_json_uint(&j, "host_first_ns", W->host_first);
            soak_json_uint(&j, "host_last_ns", W->host_last);
            soak_json_uint(&j, "busy_ns", busy);
            soak_json_uint(&j, "idle_ns", idle);
            soak_json_uint(&j, "span_ns", span);
            soak_json_uint(&j, "sample", sample_every);
            /* the cost budget: kernel launches per timed one this window, the profiler's own host
             * ns (timed launches beyond untimed ones, reading events, writing records), the budget */
            snprintf(item, sizeof item, "%.2f", W->timed_host_n ? (double)kernel_n / (double)W->timed_host_n : 0.0);
            soak_json_raw(&j, "rate", item);
            soak_json_uint(&j, "cost_ns", cost);
            soak_json_uint(&j, "cost_wall_ns", cost_wall);
            snprintf(item, sizeof item, "%g", budget * 100);
            soak_json_raw(&j, "budget_pct", item);
            soak_json_uint(&j, "coverage_every", W->cover_every ? W->cover_every : 1);
            soak_json_str(&j, "queue", soak_twin_on ? "twin" : "engine");
            soak_json_uint(&j, "estimated_ns", est_ns);
            soak_json_uint(&j, "outside_ns", outside_ns);
            soak_json_uint(&j, "unestimated", unknown);
            soak_json_uint(&j, "untimed", W->dropped);
            soak_json_uint(&j, "failed_commands", W->failed);
            /* commands: the top ones by device time, the rest summed */
            size_t o = 0;
            soak_json_raw(&j, "commands", "[");
            uint64_t rest_n = 0, rest_ns = 0, rest_bytes = 0;
            for (size_t i = 0; i < n; i++) {
                prof_slot *s = used[i];
                if (i >= RECORD_TOP) {
                    rest_n += s->count, rest_ns += s->total_ns, rest_bytes += s->bytes;
                    continue;
                }
                soak_json it;
                soak_json_open(&it, item, sizeof item);
                soak_json_str(&it, "api", soak_api_names[s->api]);
                if (s->name[0])
                    soak_json_str(&it, "kernel", s->name);
                if (s->dim) {
                    soak_json_dims(&it, "gws", s->gws, s->dim);
                    if (s->lws[0])
                        soak_json_dims(&it, "lws", s->lws, s->dim);
                }
                soak_json_uint(&it, "count", s->count);
                if (s->timed != s->count)
                    soak_json_uint(&it, "timed", s->timed);
                soak_json_uint(&it, "total_ns", s->total_ns);
                if (s->timed) {
                    soak_json_uint(&it, "p50_ns", quantile(s, 0.50));
                    soak_json_uint(&it, "p99_ns", quantile(s, 0.99));
                    soak_json_uint(&it, "max_ns", s->max_ns);
                }
                if (s->bytes)
                    soak_json_uint(&it, "bytes", s->bytes);
                soak_json_close(&it);
                if (o++)
                    soak_json_append(&j, ",");
                soak_json_append(&j, item);
            }
            soak_json_append(&j, "]");
            if (rest_n) {
                snprintf(item, sizeof item, "{\"count\":%llu,\"total_ns\":%llu,\"bytes\":%llu}",
                         (unsigned long long)rest_n, (unsigned long long)rest_ns, (unsigned long long)rest_bytes);
                soak_json_raw(&j, "other", item);
            }
            /* host time inside each entry point this window */
            static char host_buf[SOAK_N_API * 64 + 16];
            soak_json h;
            soak_json_open(&h, host_buf, sizeof host_buf);
            for (int i = 0; i < SOAK_N_API; i++) {
                uint64_t d = W->host_end[i] - W->host_start[i];
                if (d)
                    soak_json_uint(&h, soak_api_names[i], d);
            }
            soak_json_close(&h);
            soak_json_raw(&j, "host_ns", host_buf);
            soak_rec_write(buf, soak_json_end(&j), 0);
        }
    }
    for (size_t i = 0; i < W->taken_n; i++) /* only the slots taken: the table is 600 KB */
        memset(W->taken[i], 0, sizeof *W->taken[i]);
    W->taken_n = 0;
    W->open = W->timed_seen = 0;
    W->busy = W->first_start = W->last_end = W->dropped = W->failed = W->pending = 0;
    W->host_first = W->host_last = 0;
    W->timed_host_ns = W->timed_host_n = W->untimed_host_ns = W->untimed_host_n = W->drain_ns = W->flush_ns = 0;
    W->drain_wall_ns = W->flush_wall_ns = 0;
    W->twin_ns = W->twin_n = 0;
}

/* a later epoch or another phase began: the current window ends (written once its commands
 * are read); t0: the entry time of the call that saw it (the new window's first call) */
static void next_window(uint64_t epoch, uint64_t phase, uint64_t t0)
{
    window *old = &windows[cur];
    for (int i = 0; i < SOAK_N_API; i++)
        old->host_end[i] = soak_g.api[i].host_ns;
    old->host_last = __atomic_load_n(&soak_prof_last_ns, __ATOMIC_RELAXED);
    if (old->host_last < old->host_first) /* no clocked call in it (idle): an empty span */
        old->host_last = old->host_first;
    int nw = 1 - cur;
    flush_window(nw); /* the one before: still not read completely, written now */
    window *W = &windows[nw];
    W->open = 1;
    W->epoch = epoch;
    W->phase = phase;
    uint32_t ce = cover_every[phase % PHASE_N];
    cover_now = ce <= 1 || phase_windows[phase % PHASE_N]++ % ce == 0;
    W->cover_every = ce ? ce : 1;
    W->host_first = t0;
    soak_prof_epoch = epoch;
    soak_prof_phase = phase;
    memcpy(W->host_start, old->host_end, SOAK_N_API * sizeof(uint64_t));
    cur = nw;
    __atomic_store_n(&serial, serial + 1, __ATOMIC_RELEASE); /* read without the lock by launches */
    if (!old->pending)
        flush_window(1 - cur);
}

/* ---- completed events ---- */

static void account(pending *p, cl_ulong start, cl_ulong end)
{
    if (p->slot < 0 || p->win < 0 || end < start)
        return;
    window *W = &windows[p->win];
    prof_slot *s = &W->slots[p->slot];
    uint64_t ns = end - start;
    s->timed++;
    s->total_ns += ns;
    if (!p->forced) {
        s->rtimed++;
        s->rtotal_ns += ns;
    }
    if (ns > s->max_ns)
        s->max_ns = ns;
    s->hist[bucket(ns)]++;
    if (!W->first_start || start < W->first_start)
        W->first_start = start;
    uint64_t from = start > W->last_end ? start : W->last_end; /* busy time, overlaps counted once */
    if (end > from)
        W->busy += end - from;
    if (end > W->last_end)
        W->last_end = end;
}

/* reads completed events from the head of the FIFO; at most `max` (0: all complete); plock held */
static void drain(size_t max)
{
    pfn_event_info info = (pfn_event_info)soak_g.real[SOAK_ID_clGetEventInfo];
    pfn_event_info prof = (pfn_event_info)soak_g.real[SOAK_ID_clGetEventProfilingInfo];
    pfn_event1 release = (pfn_event1)soak_g.real[SOAK_ID_clReleaseEvent];
    for (size_t done = 0; head != tail && (!max || done < max); done++) {
        pending *p = &ring[head % PENDING_MAX];
        cl_int st = 1;
        if (!info || info(p->ev, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof st, &st, 0) != CL_SUCCESS)
            st = -1;
        if (st > 0)
            break; /* not complete yet: in-order queues complete in order */
        cl_ulong t0 = 0, t1 = 0;
        window *W = p->win >= 0 ? &windows[p->win] : 0;
        if (st == CL_COMPLETE && prof && prof(p->ev, CL_PROFILING_COMMAND_START, sizeof t0, &t0, 0) == CL_SUCCESS &&
            prof(p->ev, CL_PROFILING_COMMAND_END, sizeof t1, &t1, 0) == CL_SUCCESS)
            account(p, t0, t1);
        else if (W && st < 0)
            W->failed++;
        else if (W)
            W->dropped++;
        if (release)
            release(p->ev); /* ours, or the retain we added to the engine's */
        head++;
        if (W && --W->pending == 0 && p->win != cur)
            flush_window(p->win); /* the ended window's last command was read */
    }
}

/* the calling thread's CPU time: the profiler's own work, without the time the thread waited
 * for the CPU (a driver's worker threads on few cores) */
static uint64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* drain, its time counted as the profiler's own (the current window's cost); plock held */
static void drain_timed(size_t max)
{
    if (head == tail)
        return;
    uint64_t t = cpu_ns(), w = soak_now_ns();
    drain(max);
    windows[cur].drain_ns += cpu_ns() - t;
    windows[cur].drain_wall_ns += soak_now_ns() - w;
}

/* queues ev (0: an untimed command, counted only) for slot `slot` of the current window; plock held */
static void enqueue_locked(int slot, cl_event ev, int own, uint64_t bytes, int forced)
{
    pfn_event1 release = (pfn_event1)soak_g.real[SOAK_ID_clReleaseEvent];
    window *W = &windows[cur];
    if (slot >= 0) {
        W->slots[slot].count++;
        W->slots[slot].bytes += bytes;
    }
    if (!ev)
        return;
    if (sample_every > 1) /* where the timed device span begins and ends among the window's commands */
        for (size_t i = 0; i < W->taken_n; i++) {
            prof_slot *t = W->taken[i];
            if (!W->timed_seen)
                t->pre = t->count - (slot >= 0 && t == &W->slots[slot]);
            t->at_last = t->count;
        }
    W->timed_seen = 1;
    if (tail - head >= PENDING_MAX) {
        drain_timed(0);
        if (tail - head >= PENDING_MAX) { /* the device is far behind: this one goes untimed */
            W->dropped++;
            if (release)
                release(ev);
            return;
        }
    }
    ring[tail % PENDING_MAX] = (pending){ev, own, slot, cur, forced};
    tail++;
    W->pending++;
    if (tail - head >= drain_at) { /* DRAIN_BATCH more since the last look */
        drain_timed(0);
        drain_at = tail - head + DRAIN_BATCH;
    }
}

/* the engine's event is kept until read: one reference of ours */
static int hold(cl_event ev, int own)
{
    pfn_event1 retain = (pfn_event1)soak_g.real[SOAK_ID_clRetainEvent];
    return own || (retain && retain(ev) == CL_SUCCESS);
}

void soak_prof_enqueue(soak_call *c, cl_event ev, int own, uint64_t bytes)
{
    if (ev && !hold(ev, own))
        ev = 0;
    pthread_mutex_lock(&plock);
    enqueue_locked(slot_for(windows[cur].slots, c), ev, own, bytes, c->prof_timed == 2);
    pthread_mutex_unlock(&plock);
}

static int fam_want(uint32_t fam);

/* coverage: 1 for the family's first command in window `ser` (kernel name or entry point), timed
 * whatever the sampler says, when this window times them */
static int cover_first(uint32_t fam, uint64_t ser)
{
    if (!cover_now || __atomic_load_n(&name_timed[fam], __ATOMIC_RELAXED) == ser)
        return 0;
    __atomic_store_n(&name_timed[fam], ser, __ATOMIC_RELAXED);
    return 1;
}

int soak_prof_cmd_want(soak_call *c, int can_twin)
{
    if (sample_every <= 1)
        return c->prof_timed = 1;
    if (soak_twin_on && !can_twin) /* a map, unmap, marker or barrier stays on the engine's queue, untimed */
        return c->prof_timed = 0;
    uint32_t f = NAME_SLOTS + c->id; /* the entry point's family */
    if (cover_first(f, __atomic_load_n(&serial, __ATOMIC_RELAXED)))
        return c->prof_timed = 2;
    return c->prof_timed = fam_want(f);
}

void soak_prof_twin_cost(uint64_t ns)
{
    window *W = &windows[cur];
    SOAK_ADD(&W->twin_ns, ns);
    SOAK_ADD(&W->twin_n, 1);
}

/* ---- kernel launches: the per-thread cache ---- */

/* one (kernel object, work sizes) a thread launched: its name, family and this window's slot */
typedef struct {
    const void *kernel;
    uint64_t gen;    /* soak_prof_kernel_gen when filled: a released kernel's address may come back */
    uint64_t serial; /* the window `slot` belongs to */
    uint32_t dim, fam;
    uint32_t bkt; /* its work-items' size class (SIZE_CLASS) */
    int fresh;    /* no launch of its kernel was timed at a size near this one yet */
    uint64_t gws[3], lws[3];
    prof_slot *slot; /* 0: the window's table is full (counted in no slot) */
    int slot_i;
    char name[96];
} launch_entry;
#define TCACHE_BITS 8
#define TCACHE (1 << TCACHE_BITS)
/* heap, one per thread (a pointer in TLS: static TLS room for a dlopen'ed library is small) */
static SOAK_TLS launch_entry *tcache;
SOAK_TLS uint32_t soak_host_left;
static pthread_key_t tcache_key;
static pthread_once_t tcache_once = PTHREAD_ONCE_INIT;
static void tcache_key_make(void) { pthread_key_create(&tcache_key, free); }

static launch_entry *tcache_get(void)
{
    if (SOAK_LIKELY(tcache != 0))
        return tcache;
    pthread_once(&tcache_once, tcache_key_make);
    tcache = calloc(TCACHE, sizeof(launch_entry)); /* once per thread: freed when it exits */
    if (tcache)
        pthread_setspecific(tcache_key, tcache);
    return tcache;
}

/* a launch the thread's cache does not hold for this window (a new kernel object or sizes, or a
 * new window): its name (the driver asked once per kernel object), family and window slot */
static void entry_fill(launch_entry *e, const void *kernel, uint64_t gen, uint32_t dim, const uint64_t *g,
                       const uint64_t *l, uint32_t api)
{
    if (e->kernel != kernel || e->gen != gen) {
        size_t at = ((uintptr_t)kernel >> 4) % KCACHE;
        pthread_mutex_lock(&plock);
        kcache_entry *k = &kcache[at];
        int known = k->kernel == kernel && k->gen == gen;
        if (known)
            memcpy(e->name, k->name, sizeof e->name);
        pthread_mutex_unlock(&plock);
        if (!known) {
            soak_kernel_name(kernel, e->name, sizeof e->name); /* may call the driver: not under plock */
            pthread_mutex_lock(&plock);
            k->kernel = kernel;
            k->gen = gen;
            memcpy(k->name, e->name, sizeof k->name);
            pthread_mutex_unlock(&plock);
        }
        e->kernel = kernel;
        e->gen = gen;
        e->fam = name_hash(e->name);
    }
    e->dim = dim;
    memcpy(e->gws, g, sizeof e->gws);
    memcpy(e->lws, l, sizeof e->lws);
    e->bkt = size_class(dim, g);
    e->fresh = sample_every > 1 && !size_near(e->fam, e->bkt);
    pthread_mutex_lock(&plock);
    prof_key key = {api, dim, g, l, e->name};
    e->slot_i = slot_of(windows[cur].slots, &key, 1);
    e->slot = e->slot_i >= 0 ? &windows[cur].slots[e->slot_i] : 0;
    e->serial = serial;
    pthread_mutex_unlock(&plock);
}

/* the entry holds this kernel object (not released since) and these work sizes */
static inline int entry_key(const launch_entry *e, const void *kernel, uint64_t gen, uint32_t dim, const uint64_t *g,
                            const uint64_t *l)
{
    return e->kernel == kernel && e->gen == gen && e->dim == dim && !memcmp(e->gws, g, 24) && !memcmp(e->lws, l, 24);
}

/* the family's sampler: 1 in its rate for the current phase (threads racing here only shift
 * which launch is timed) */
static int fam_want(uint32_t fam)
{
    if (fam_skip[fam]) {
        fam_skip[fam]--;
        return 0;
    }
    uint32_t r = fam_rate[soak_prof_phase % PHASE_N][fam];
    fam_skip[fam] = (uint32_t)next_skip(r ? r : sample_every);
    return 1;
}

int soak_prof_kernel_want(soak_call *c, cl_kernel kernel, cl_uint dim, const size_t *gws, const size_t *lws)
{
    uint64_t g[3] = {0, 0, 0}, l[3] = {0, 0, 0};
    if (!gws || dim < 1 || dim > 3)
        dim = 0;
    for (cl_uint i = 0; i < dim; i++) {
        g[i] = gws[i];
        l[i] = lws ? lws[i] : 0;
    }
    c->prof_ent = 0;
    launch_entry *t = tcache_get();
    if (SOAK_UNLIKELY(!t))
        return 0; /* no memory for the cache: not counted */
    uint64_t h = (uintptr_t)kernel ^ (g[0] * 0x9E3779B97F4A7C15ull) ^ (g[1] << 17) ^ (g[2] << 34) ^ (l[0] << 7) ^
                 (l[1] << 27) ^ (l[2] << 47);
    /* two ways per set: a kernel launched at two sizes in turn (or two colliding keys) stays cached */
    launch_entry *e = &t[((h * 0x9E3779B97F4A7C15ull) >> (64 - TCACHE_BITS)) & ~(size_t)1];
    uint64_t gen = __atomic_load_n(&soak_prof_kernel_gen, __ATOMIC_RELAXED);
    uint64_t ser = __atomic_load_n(&serial, __ATOMIC_RELAXED);
    if (SOAK_UNLIKELY(e->serial != ser || !entry_key(e, kernel, gen, dim, g, l))) {
        if (entry_key(e + 1, kernel, gen, dim, g, l))
            e++;
        else if (!entry_key(e, kernel, gen, dim, g, l) && e->kernel)
            e[1] = e[0]; /* the newer one moves to the second way, the older one goes */
        if (e->serial != ser || !entry_key(e, kernel, gen, dim, g, l))
            entry_fill(e, kernel, gen, dim, g, l, c->id); /* new here, or a new window: its slot */
    }
    c->prof_ent = e;
    c->prof_serial = e->serial;
    int timed; /* 1: the sampler's pick; 2: for coverage (forced) */
    if (sample_every <= 1)
        timed = 1;
    else if (cover_first(e->fam, e->serial)) /* the name's first in the window */
        timed = 2;
    else if (SOAK_UNLIKELY(e->fresh) && !size_near(e->fam, e->bkt)) /* a size far from any timed one */
        timed = 2;
    else
        timed = fam_want(e->fam);
    if (timed) {
        size_mark(e->fam, e->bkt);
        e->fresh = 0;
    }
    if (timed) { /* host-timed always: its cost against the untimed launches' is the profiler's */
        c->prof_timed = timed;
        c->host_scale = 1;
        if (!c->t0)
            c->t0 = soak_now_ns();
    }
    return timed;
}

void soak_prof_kernel_done(soak_call *c, cl_event ev, int own)
{
    launch_entry *e = c->prof_ent;
    if (!e)
        return;
    if (SOAK_LIKELY(!ev && !c->prof_timed) && c->prof_serial == __atomic_load_n(&serial, __ATOMIC_RELAXED)) {
        if (e->slot) /* the hot path: no lock */
            __atomic_fetch_add(&e->slot->count, 1, __ATOMIC_RELAXED);
        return;
    }
    if (ev && !hold(ev, own))
        ev = 0;
    pthread_mutex_lock(&plock);
    int slot = e->slot_i;
    if (c->prof_serial != serial) { /* another window began during the launch */
        prof_key k = {c->id, e->dim, e->gws, e->lws, e->name};
        slot = slot_of(windows[cur].slots, &k, 1);
    }
    enqueue_locked(slot, ev, own, 0, c->prof_timed == 2);
    pthread_mutex_unlock(&plock);
}

void soak_prof_host(soak_call *c, uint64_t ns)
{
    window *W = &windows[cur];
    uint64_t cap = c->prof_timed ? timed_cap : untimed_cap;
    if (cap && ns > cap)
        ns = cap;
    if (c->prof_timed) {
        SOAK_ADD(&W->timed_host_ns, ns);
        SOAK_ADD(&W->timed_host_n, 1);
    } else {
        SOAK_ADD(&W->untimed_host_ns, ns);
        SOAK_ADD(&W->untimed_host_n, 1);
    }
}

void soak_prof_switch(uint64_t t0)
{
    if (!ready)
        return;
    pthread_mutex_lock(&plock);
    uint64_t ep = __atomic_load_n(&soak_g.hdr->epoch, __ATOMIC_RELAXED);
    uint64_t ph = __atomic_load_n(&soak_g.hdr->phase, __ATOMIC_RELAXED);
    if (ep != windows[cur].epoch || ph != windows[cur].phase) {
        if (!t0)
            t0 = soak_now_ns();
        drain_timed(0); /* the ending window's events */
        uint64_t t = cpu_ns(), w = soak_now_ns();
        next_window(ep, ph, t0);
        windows[cur].flush_ns += cpu_ns() - t; /* writing the record(s) */
        windows[cur].flush_wall_ns += soak_now_ns() - w;
    }
    pthread_mutex_unlock(&plock);
}

/* the worker's idle mark (soak.cl.trace.PhaseMarker) acts at once: the window that ended (a
 * decode) is read and written now, while the engine waits, not in the next prefill's first CL call
 * (ending a decode window of thousands of launches took 100 us: a tenth of a tiny model's prefill).
 * Other marks take effect at the phase's first CL call: a window begun at the mark would hold the
 * worker's own time before the engine's clock starts (prefill closure 104-106 % on PoCL) */
#define PHASE_IDLE 4 /* soak.phases.PROFILE_PHASES */
SOAK_EXPORT void soak_interposer_phase_now(void)
{
    if (!ready || !soak_g.hdr)
        return;
    soak_prof_switch(0);
    /* idle: the new window holds nothing yet but that cost; it ends too, its record written now
     * (what writing it costs is not counted), and the next phase's mark ends an empty window */
    pthread_mutex_lock(&plock);
    window *W = &windows[cur];
    if (W->phase == PHASE_IDLE && W->flush_ns && !W->taken_n && !W->pending && !windows[1 - cur].open)
        next_window(W->epoch, W->phase, soak_now_ns());
    pthread_mutex_unlock(&plock);
}

void soak_prof_sync(void)
{
    pthread_mutex_lock(&plock);
    drain_timed(0);
    pthread_mutex_unlock(&plock);
}

void soak_profile_fini(void)
{
    if (!ready)
        return;
    /* no driver calls here: at exit the real library may be going away too; what was not
     * read at the last clFinish/clWaitForEvents is counted untimed */
    pthread_mutex_lock(&plock);
    for (int i = 0; i < SOAK_N_API; i++)
        windows[cur].host_end[i] = soak_g.api[i].host_ns;
    windows[cur].host_last = __atomic_load_n(&soak_prof_last_ns, __ATOMIC_RELAXED);
    flush_window(1 - cur);
    flush_window(cur);
    head = tail;
    pthread_mutex_unlock(&plock);
}

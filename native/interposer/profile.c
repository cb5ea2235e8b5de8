/* --cl-profile (SOAK_CL_PROFILE=1): device time per kernel and transfer, device idle gaps,
 * host time per entry point.
 *
 * Queues the engine creates get CL_QUEUE_PROFILING_ENABLE.  Every enqueue gets an event (the
 * engine's, retained, or one of ours, released here); events wait in a FIFO and are read
 * when complete, without blocking: the complete ones at the head once 32 wait, all complete
 * ones at clFinish/clWaitForEvents.  Times are aggregated per window (the reader's epoch, one soak
 * iteration; a command counts in the window it was enqueued in) and written as one `profile`
 * record once the window has ended (an enqueue of a later epoch came) and its last command was
 * read (or at exit, or when yet another window begins): per kernel name + global/local size
 * count, total and p50/p99 device ns;
 * per transfer entry point count, bytes and device ns; busy and idle device ns; host ns per
 * entry point.  See FORMAT.md. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    int win; /* windows[] index; -1: its window was written already (untimed there) */
} pending;

typedef struct {
    int used;
    uint32_t api;
    uint32_t dim;
    uint64_t gws[3], lws[3];
    char name[96];
    uint64_t count, total_ns, bytes, max_ns;
    uint32_t hist[HIST_N];
} prof_slot;

static pthread_mutex_t plock = PTHREAD_MUTEX_INITIALIZER;
static pending ring[PENDING_MAX];
static size_t head, tail; /* ring[head..tail) pending */
static size_t drain_at = DRAIN_BATCH; /* pending count at which the enqueue path reads events next */
typedef struct {
    int open;
    uint64_t epoch, phase, busy, idle, first_start, last_end, dropped, failed, pending;
    uint64_t host_first, host_last; /* CLOCK_MONOTONIC: first call's entry, last call's exit */
    prof_slot *slots;
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
    uint64_t want = (uint64_t)(q * (double)s->count + 0.5), seen = 0;
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
    windows[0].open = 1;
    windows[0].host_first = soak_now_ns();
    ready = 1;
}

/* ---- queue properties ---- */

static SOAK_TLS cl_queue_properties props_buf[64];

const cl_queue_properties *soak_profile_props(const cl_queue_properties *props)
{
    if (!soak_g.profile)
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

static int slot_for(prof_slot *slots, const soak_call *c)
{
    uint64_t h = 1469598103934665603ull ^ c->id;
    for (const char *p = c->kernel; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    for (uint32_t i = 0; i < c->dim; i++)
        h = (h ^ c->gws[i] ^ (c->lws[i] << 20)) * 1099511628211ull;
    for (unsigned probe = 0; probe < PROF_SLOTS; probe++) {
        prof_slot *s = &slots[(h + probe) & (PROF_SLOTS - 1)];
        if (!s->used) {
            s->used = 1;
            s->api = c->id;
            s->dim = c->dim;
            memcpy(s->gws, c->gws, sizeof s->gws);
            memcpy(s->lws, c->has_lws ? c->lws : (uint64_t[3]){0, 0, 0}, sizeof s->lws);
            snprintf(s->name, sizeof s->name, "%s", c->kernel);
            return (int)(s - slots);
        }
        if (s->api == c->id && s->dim == c->dim && !memcmp(s->gws, c->gws, sizeof s->gws) &&
            !memcmp(s->lws, c->has_lws ? c->lws : (uint64_t[3]){0, 0, 0}, sizeof s->lws) &&
            !strcmp(s->name, c->kernel))
            return (int)(s - slots);
    }
    return -1;
}

static int by_total(const void *a, const void *b)
{
    const prof_slot *x = *(prof_slot *const *)a, *y = *(prof_slot *const *)b;
    return x->total_ns < y->total_ns ? 1 : x->total_ns > y->total_ns ? -1 : 0;
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
    prof_slot *slots = W->slots;
    static prof_slot *used[PROF_SLOTS];
    size_t n = 0;
    for (size_t i = 0; i < PROF_SLOTS; i++)
        if (slots[i].used && slots[i].count)
            used[n++] = &slots[i];
    uint64_t host_total = 0;
    for (int i = 0; i < SOAK_N_API; i++)
        host_total += W->host_end[i] - W->host_start[i];
    if (n || host_total || W->dropped) {
        qsort(used, n, sizeof used[0], by_total);
        size_t cap = 96 * 1024;
        char *buf = malloc(cap);
        if (buf) {
            soak_json j;
            soak_json_begin(&j, buf, cap, "profile");
            soak_json_common(&j, 0);
            soak_json_uint(&j, "epoch", W->epoch);
            soak_json_uint(&j, "phase", W->phase);
            soak_json_uint(&j, "host_first_ns", W->host_first);
            soak_json_uint(&j, "host_last_ns", W->host_last);
            soak_json_uint(&j, "busy_ns", W->busy);
            soak_json_uint(&j, "idle_ns", W->idle);
            soak_json_uint(&j, "span_ns", W->last_end > W->first_start ? W->last_end - W->first_start : 0);
            soak_json_uint(&j, "untimed", W->dropped);
            soak_json_uint(&j, "failed_commands", W->failed);
            /* commands: the top ones by device time, the rest summed */
            char item[512];
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
                soak_json_begin(&it, item, sizeof item, soak_api_names[s->api]);
                it.len = 1; /* drop "type": items are {"api":...} */
                soak_json_str(&it, "api", soak_api_names[s->api]);
                if (s->name[0])
                    soak_json_str(&it, "kernel", s->name);
                if (s->dim) {
                    soak_json_dims(&it, "gws", s->gws, s->dim);
                    if (s->lws[0])
                        soak_json_dims(&it, "lws", s->lws, s->dim);
                }
                soak_json_uint(&it, "count", s->count);
                soak_json_uint(&it, "total_ns", s->total_ns);
                soak_json_uint(&it, "p50_ns", quantile(s, 0.50));
                soak_json_uint(&it, "p99_ns", quantile(s, 0.99));
                soak_json_uint(&it, "max_ns", s->max_ns);
                if (s->bytes)
                    soak_json_uint(&it, "bytes", s->bytes);
                item[it.len++] = '}';
                item[it.len] = 0;
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
            soak_json_raw(&j, "host_ns", "{");
            o = 0;
            for (int i = 0; i < SOAK_N_API; i++) {
                uint64_t d = W->host_end[i] - W->host_start[i];
                if (!d)
                    continue;
                snprintf(item, sizeof item, "%s\"%s\":%llu", o++ ? "," : "", soak_api_names[i], (unsigned long long)d);
                soak_json_append(&j, item);
            }
            soak_json_append(&j, "}");
            soak_rec_write(buf, soak_json_end(&j), 0);
            free(buf);
        }
    }
    memset(slots, 0, PROF_SLOTS * sizeof *slots);
    W->open = 0;
    W->busy = W->idle = W->first_start = W->last_end = W->dropped = W->failed = W->pending = 0;
    W->host_first = W->host_last = 0;
}

/* a later epoch or another phase began: the current window ends (written once its commands
 * are read); t0: the entry time of the call that saw it (the new window's first call) */
static void next_window(uint64_t epoch, uint64_t phase, uint64_t t0)
{
    window *old = &windows[cur];
    for (int i = 0; i < SOAK_N_API; i++)
        old->host_end[i] = soak_g.api[i].host_ns;
    old->host_last = __atomic_load_n(&soak_prof_last_ns, __ATOMIC_RELAXED);
    int nw = 1 - cur;
    flush_window(nw); /* the one before: still not read completely, written now */
    window *W = &windows[nw];
    W->open = 1;
    W->epoch = epoch;
    W->phase = phase;
    W->host_first = t0;
    soak_prof_epoch = epoch;
    soak_prof_phase = phase;
    memcpy(W->host_start, old->host_end, SOAK_N_API * sizeof(uint64_t));
    cur = nw;
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
    s->count++;
    s->total_ns += ns;
    if (ns > s->max_ns)
        s->max_ns = ns;
    s->hist[bucket(ns)]++;
    if (!W->first_start || start < W->first_start)
        W->first_start = start;
    if (W->last_end && start > W->last_end)
        W->idle += start - W->last_end;
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

void soak_prof_enqueue(soak_call *c, cl_event ev, int own, uint64_t bytes)
{
    pfn_event1 retain = (pfn_event1)soak_g.real[SOAK_ID_clRetainEvent];
    pfn_event1 release = (pfn_event1)soak_g.real[SOAK_ID_clReleaseEvent];
    if (!own && (!retain || retain(ev) != CL_SUCCESS))
        return;
    pthread_mutex_lock(&plock);
    window *W = &windows[cur];
    if (tail - head >= PENDING_MAX) {
        drain(0);
        if (tail - head >= PENDING_MAX) { /* the device is far behind: this one goes untimed */
            W->dropped++;
            if (release)
                release(ev);
            pthread_mutex_unlock(&plock);
            return;
        }
    }
    int slot = slot_for(W->slots, c);
    if (slot >= 0)
        W->slots[slot].bytes += bytes;
    ring[tail % PENDING_MAX] = (pending){ev, own, slot, cur};
    tail++;
    W->pending++;
    if (tail - head >= drain_at) { /* DRAIN_BATCH more since the last look */
        drain(0);
        drain_at = tail - head + DRAIN_BATCH;
    }
    pthread_mutex_unlock(&plock);
}

void soak_prof_switch(uint64_t t0)
{
    if (!ready)
        return;
    pthread_mutex_lock(&plock);
    uint64_t ep = __atomic_load_n(&soak_g.hdr->epoch, __ATOMIC_RELAXED);
    uint64_t ph = __atomic_load_n(&soak_g.hdr->phase, __ATOMIC_RELAXED);
    if (ep != windows[cur].epoch || ph != windows[cur].phase) {
        drain(0);
        next_window(ep, ph, t0);
    }
    pthread_mutex_unlock(&plock);
}

void soak_prof_sync(void)
{
    pthread_mutex_lock(&plock);
    drain(0);
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

/* soak OpenCL interposer: the core the generated wrappers call.
 *
 * Every wrapper does:  soak_real_fn -> soak_enter -> soak_fault (+ pre hook)
 *                      -> real call -> post hook -> soak_exit.
 * The fast path (no error, no fault rule for this entry point) is two relaxed
 * atomic adds on the mmap'd stats file and a few loads.  See FORMAT.md.
 */
#ifndef SOAK_INTERPOSER_H
#define SOAK_INTERPOSER_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h> /* defines __GLIBC__ on glibc */

#include "cl_api.h" /* generated: the OpenCL headers, SOAK_N_API, SOAK_ID_<name> */
#include "cl_codes.h" /* soak_code_names, generated from cl_error_codes.tsv */

#define SOAK_EXPORT __attribute__((visibility("default")))
#define SOAK_HIDDEN __attribute__((visibility("hidden")))
#define SOAK_LIKELY(x) __builtin_expect(!!(x), 1)
#define SOAK_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define SOAK_ADD(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)
#define SOAK_SUB(p, v) __atomic_fetch_sub((p), (v), __ATOMIC_RELAXED)

#define SOAK_INTERPOSER_VERSION 2

#include "stats_layout.h" /* the stats file: soak_stats_header, _kind, _api, _agg */

enum soak_obj_kind {
    SOAK_OBJ_CONTEXT,
    SOAK_OBJ_QUEUE,
    SOAK_OBJ_BUFFER,
    SOAK_OBJ_SUBBUFFER,
    SOAK_OBJ_IMAGE,
    SOAK_OBJ_PIPE,
    SOAK_OBJ_MEM_OTHER, /* cl_mem from GL/EGL/DX/other creators: size unknown */
    SOAK_OBJ_SVM,
    SOAK_OBJ_PROGRAM,
    SOAK_OBJ_KERNEL,
    SOAK_OBJ_EVENT,
    SOAK_OBJ_SAMPLER,
    SOAK_N_KINDS
};

/* ---- per call ---- */
#define SOAK_CALL_INJECTED 1u
#define SOAK_CALL_MISSING 2u
#define SOAK_CALL_SKIP 4u    /* a fault rule's skip: return CL_SUCCESS, the driver never sees it (silent.c) */
#define SOAK_CALL_CORRUPT 8u /* a fault rule's corrupt: after the call, perturb its destination (silent.c) */

/* corrupt modes */
#define SOAK_CORRUPT_NAN 1
#define SOAK_CORRUPT_BITFLIP 2

typedef struct {
    uint32_t id;
    uint32_t flags;
    uint64_t seq;   /* global sequence number, from 1 */
    uint64_t index; /* this entry point's call number, from 1 */
    const char *why; /* injected: which rule / "mem_limit" */
    char detail[200];
    /* filled on the error path only (hooks), for the record and the aggregation key */
    uint32_t dim;               /* NDRange: work dimensions (0: no kernel details) */
    uint32_t has_lws;
    uint64_t gws[3], lws[3];
    int64_t param;              /* clGet*Info: param_name (-1: none) */
    const char *param_name;     /* its symbolic name, when the headers define one */
    char kernel[96];            /* NDRange: CL_KERNEL_FUNCTION_NAME */
    uint64_t t0;                /* profiling: when the call entered; 0: not host-timed (an untimed launch
                                   between two host samples) */
    uint32_t host_scale;        /* profiling: host_ns gets (exit - t0) x this (a sampled launch stands for
                                   the SOAK_HOST_EVERY - 1 untimed ones between it and the next) */
    int prof_timed;             /* profiling, NDRange: this launch gets an event */
    void *prof_ent;             /* profiling, NDRange: its per-thread cache entry (kernel, sizes, slot) */
    uint64_t twin_t0;           /* profiling, a transfer timed on a twin queue: when its redirection began */
    uint64_t prof_serial;       /* ... and the window serial it was found in */
    /* fault rules (set by soak_fault only when the entry point has rules) */
    const void *kobj;           /* the call's cl_kernel (entry points taking one), for kernel:GLOB */
    int corrupt_mode;           /* SOAK_CORRUPT_*: what a corrupt rule does */
    uint64_t corrupt_words;     /* how many 32-bit words (0: all) */
    uint64_t corrupt_seed;      /* the rule's seed mixed with the call's number: positions and bits */
} soak_call;

typedef struct {
    uint32_t value;
    const char *name;
} soak_param_name;

typedef struct soak_rule soak_rule;

typedef struct {
    volatile int ready;
    soak_stats_header *hdr;
    soak_stats_kind *kinds;
    soak_stats_api *api;
    soak_stats_agg *agg; /* SOAK_AGG_SLOTS slots; 0 when the stats file is not a file (no aggregation) */
    soak_rule *rules[SOAK_N_API];
    void *real[SOAK_N_API];
    uint8_t tried[SOAK_N_API];
    int gpu_override;
    uint64_t mem_limit;
    int mem_records;
    uint64_t max_records;
    uint64_t error_samples;
    int profile;            /* SOAK_CL_PROFILE: device and host timing (profile.c) */ /* records per kind of error and epoch (0: every error) */
} soak_state;

typedef struct {
    const char *name;
    int id;
    void *fn;
} soak_wrapper_entry;

extern SOAK_HIDDEN soak_state soak_g;
/* glibc keeps static TLS room for dlopen'ed libraries, so the initial-exec model
 * (one load, no __tls_get_addr call) is safe there; bionic refuses it in
 * dlopen'ed libraries, so Android and others use the default model. */
#if defined(__linux__) && !defined(__ANDROID__) && defined(__GLIBC__)
#define SOAK_TLS __thread __attribute__((tls_model("initial-exec")))
#else
#define SOAK_TLS __thread
#endif
extern SOAK_HIDDEN SOAK_TLS int soak_depth;
extern SOAK_HIDDEN const char *const soak_api_names[SOAK_N_API];
extern SOAK_HIDDEN const soak_wrapper_entry soak_wrappers[SOAK_N_API];
extern SOAK_HIDDEN const unsigned char soak_api_flags[SOAK_N_API];
#define SOAK_API_VOID 1u
#define SOAK_API_ERRCODE 2u
#define SOAK_API_INT 4u
#define SOAK_API_KERNEL 8u /* takes a cl_kernel `kernel` (the kernel:GLOB trigger applies) */
#define SOAK_API_TWIN 16u  /* --cl-profile can time it on a twin queue (twin.c) */

SOAK_HIDDEN void soak_expand_path(const char *in, char *out, size_t cap);
SOAK_HIDDEN int soak_api_id(const char *name);

SOAK_HIDDEN void soak_init(void);
SOAK_HIDDEN void *soak_resolve_late(int id);
SOAK_HIDDEN cl_int soak_fault_slow(soak_call *c);
SOAK_HIDDEN void soak_record_error(soak_call *c, cl_int code);
/* a silent fault (skip, corrupt) soak injected into a call that returns CL_SUCCESS: an `error`
 * record with code 0 and `action`; extra: more JSON fields ("k":v,...; may be 0) */
SOAK_HIDDEN void soak_record_silent(soak_call *c, const char *action, const char *extra);
SOAK_HIDDEN cl_int soak_missing(soak_call *c);
SOAK_HIDDEN uint64_t soak_now_ns(void);
/* a failing clGet*Info: remember its param_name (names: the prefix table for this entry point) */
SOAK_HIDDEN void soak_note_param(soak_call *c, const soak_param_name *names, size_t n, uint64_t param);
SOAK_HIDDEN void soak_kernel_name(const void *kernel, char *out, size_t cap);

/* profile.c: the window is keyed by (epoch, phase) from the stats header; a call that sees
 * either change ends the current window (soak_prof_switch) */
SOAK_HIDDEN extern uint64_t soak_prof_epoch, soak_prof_phase, soak_prof_last_ns;
SOAK_HIDDEN void soak_prof_switch(uint64_t t0); /* t0: 0 when the call was not host-timed */
/* host time of kernel launches is sampled: one launch in SOAK_HOST_EVERY per thread gets the two
 * clock reads (and stands for the ones between), so an untimed launch reads no clock */
#define SOAK_HOST_EVERY 16
extern SOAK_HIDDEN SOAK_TLS uint32_t soak_host_left;
SOAK_HIDDEN void soak_prof_host(soak_call *c, uint64_t ns);
static inline void soak_prof_tick(uint64_t t0)
{
    if (SOAK_UNLIKELY(__atomic_load_n(&soak_g.hdr->epoch, __ATOMIC_RELAXED) != soak_prof_epoch ||
                      __atomic_load_n(&soak_g.hdr->phase, __ATOMIC_RELAXED) != soak_prof_phase))
        soak_prof_switch(t0);
}

static inline void *soak_real_fn(int id)
{
    if (SOAK_UNLIKELY(!__atomic_load_n(&soak_g.ready, __ATOMIC_ACQUIRE)))
        soak_init();
    void *p = soak_g.real[id];
    if (SOAK_UNLIKELY(!p) && !soak_g.tried[id])
        p = soak_resolve_late(id);
    return p;
}

/* Returns 0 when this call must only be forwarded (re-entered from inside
 * another wrapper on this thread, e.g. a driver calling the API itself). */
static inline int soak_enter(soak_call *c, int id)
{
    if (SOAK_UNLIKELY(soak_depth) || SOAK_UNLIKELY(!soak_g.hdr))
        return 0;
    soak_depth = 1;
    c->id = (uint32_t)id;
    c->flags = 0;
    c->why = 0;
    c->detail[0] = 0;
    c->dim = 0;
    c->param = -1;
    c->kernel[0] = 0;
    c->seq = SOAK_ADD(&soak_g.hdr->calls, 1) + 1;
    c->index = SOAK_ADD(&soak_g.api[id].calls, 1) + 1;
    if (SOAK_UNLIKELY(soak_g.profile)) {
        c->prof_timed = 0;
        c->host_scale = 1;
        if (id == SOAK_ID_clEnqueueNDRangeKernel) {
            if (soak_host_left > 1) { /* not host-sampled: no clock read (a timed launch reads it later) */
                soak_host_left--;
                c->host_scale = 0;
            } else {
                soak_host_left = SOAK_HOST_EVERY;
                c->host_scale = SOAK_HOST_EVERY;
            }
        }
        c->t0 = c->host_scale ? soak_now_ns() : 0;
        soak_prof_tick(c->t0);
    }
    return 1;
}

static inline cl_int soak_fault(soak_call *c)
{
    if (SOAK_LIKELY(!soak_g.rules[c->id]))
        return 0;
    c->kobj = 0;
    return soak_fault_slow(c);
}

/* entry points with a cl_kernel parameter: the kernel:GLOB trigger matches its function name */
static inline cl_int soak_fault_k(soak_call *c, const void *kernel)
{
    if (SOAK_LIKELY(!soak_g.rules[c->id]))
        return 0;
    c->kobj = kernel;
    return soak_fault_slow(c);
}

static inline void soak_exit(soak_call *c, cl_int code)
{
    if (SOAK_UNLIKELY(code != 0))
        soak_record_error(c, code);
    if (SOAK_UNLIKELY(soak_g.profile) && c->t0) {
        uint64_t t1 = soak_now_ns();
        SOAK_ADD(&soak_g.api[c->id].host_ns, (t1 - c->t0) * c->host_scale);
        __atomic_store_n(&soak_prof_last_ns, t1, __ATOMIC_RELAXED);
        if (c->id == SOAK_ID_clEnqueueNDRangeKernel)
            soak_prof_host(c, t1 - c->t0);
    }
    soak_depth = 0;
}

/* objects.c */
SOAK_HIDDEN void soak_obj_new(soak_call *c, int kind, const void *obj, uint64_t bytes);
SOAK_HIDDEN void soak_obj_retain(soak_call *c, const void *obj);
SOAK_HIDDEN void soak_obj_release(soak_call *c, const void *obj);
SOAK_HIDDEN void soak_obj_exit_summary(char *buf, size_t cap);

/* profile.c */
SOAK_HIDDEN void soak_profile_init(void);
SOAK_HIDDEN void soak_profile_fini(void);
SOAK_HIDDEN const cl_queue_properties *soak_profile_props(const cl_queue_properties *props);
/* a successful enqueue: counted; ev (0: untimed) read once complete; own: ours to release */
SOAK_HIDDEN void soak_prof_enqueue(soak_call *c, cl_event ev, int own, uint64_t bytes);
/* a kernel launch: before it, whether to time it (its kernel name's first launch in the window,
 * or its kernel family's sampler's pick); after it succeeded, counted and ev (0: untimed) queued.
 * An untimed launch takes no lock, allocates nothing and hashes no string: a per-thread cache
 * keyed by (kernel object, work sizes) holds its window slot */
SOAK_HIDDEN int soak_prof_kernel_want(soak_call *c, cl_kernel kernel, cl_uint dim, const size_t *gws,
                                      const size_t *lws);
SOAK_HIDDEN void soak_prof_kernel_done(soak_call *c, cl_event ev, int own);
SOAK_HIDDEN extern uint64_t soak_prof_kernel_gen; /* bumped when a kernel object goes away */
SOAK_HIDDEN void soak_prof_sync(void);
/* a command other than a kernel launch: whether to time it (its entry point's first in the window,
 * then 1 in its rate, as kernel names are; can_twin 0: on twin queues it is never timed) */
SOAK_HIDDEN int soak_prof_cmd_want(soak_call *c, int can_twin);
SOAK_HIDDEN void soak_prof_twin_cost(uint64_t ns); /* a transfer's redirection: the profiler's own time */

/* twin.c: timed commands on a profiling twin of the engine's queue, in the engine's order */
#define SOAK_TWIN_WAIT_MAX 16
SOAK_HIDDEN extern int soak_twin_on;
SOAK_HIDDEN void soak_twin_init(int sampled); /* sampled: not every launch timed */
/* the queue a timed command goes to: q's twin (the wait list gets a marker of q's earlier commands,
 * in buf), q itself (it profiles), or 0 (it cannot be timed) */
SOAK_HIDDEN cl_command_queue soak_twin_enter(soak_call *c, cl_command_queue q, cl_uint *nw, const cl_event **wl,
                                             cl_event *buf, cl_event *mark);
/* after the command on twin t: q waits for its event (0: it failed) */
SOAK_HIDDEN void soak_twin_leave(soak_call *c, cl_command_queue q, cl_command_queue t, cl_event ev, cl_event mark);
SOAK_HIDDEN void soak_twin_forget(cl_command_queue q); /* before the engine's release of q */

/* records.c */
SOAK_HIDDEN void soak_rec_open(void);
SOAK_HIDDEN int soak_rec_write(const char *buf, size_t len, int is_error);
SOAK_HIDDEN const char *soak_code_to_name(int code);

typedef struct {
    char *buf;
    size_t len, cap;
} soak_json;

SOAK_HIDDEN void soak_json_begin(soak_json *j, char *buf, size_t cap, const char *kind);
/* an object without "type" (a record's nested one, in a buffer of its own); close appends "}" and a NUL */
SOAK_HIDDEN void soak_json_open(soak_json *j, char *buf, size_t cap);
SOAK_HIDDEN size_t soak_json_close(soak_json *j);
SOAK_HIDDEN void soak_json_str(soak_json *j, const char *key, const char *val);
SOAK_HIDDEN void soak_json_strn(soak_json *j, const char *key, const char *val, size_t n);
SOAK_HIDDEN void soak_json_int(soak_json *j, const char *key, int64_t v);
SOAK_HIDDEN void soak_json_uint(soak_json *j, const char *key, uint64_t v);
SOAK_HIDDEN void soak_json_ptr(soak_json *j, const char *key, const void *p);
SOAK_HIDDEN void soak_json_bool(soak_json *j, const char *key, int v);
SOAK_HIDDEN void soak_json_raw(soak_json *j, const char *key, const char *raw);
/* "key":[v0,v1,v2], the first dim (<= 3) work sizes */
SOAK_HIDDEN void soak_json_dims(soak_json *j, const char *key, const uint64_t *v, uint32_t dim);
SOAK_HIDDEN void soak_json_append(soak_json *j, const char *raw); /* no key, no comma */
SOAK_HIDDEN void soak_json_common(soak_json *j, const soak_call *c); /* pid, seq, t_ns, tid, api */
SOAK_HIDDEN size_t soak_json_end(soak_json *j);                     /* appends "}\n" */

#endif

/* soak OpenCL interposer: start-up, configuration, fault rules, the stats
 * file and clGetExtensionFunctionAddress(ForPlatform).
 *
 * Environment (all optional; see FORMAT.md and docs in soak/cl):
 *   SOAK_CL_REAL_LIB      the real OpenCL library (default libOpenCL.so.1;
 *                         on Android the vendor paths)
 *   SOAK_CL_TRACE         record file (JSON lines, appended; %p = pid)
 *   SOAK_CL_STATS         stats file (mmap'd, fixed layout; %p = pid)
 *   SOAK_CL_FAULTS        fault rules, e.g. "clEnqueueNDRangeKernel=-5@nth:50"
 *   SOAK_CL_GPU_OVERRIDE  1: report CPU/accelerator devices as GPUs
 *   SOAK_CL_MEM_LIMIT     byte budget for live buffers/images/pipes/SVM (K/M/G suffix)
 *   SOAK_CL_MEM_RECORDS   0: no per-allocation records (default 1)
 *   SOAK_CL_MAX_RECORDS   cap on error records (default 100000)
 *   SOAK_CL_ERROR_SAMPLES records per kind of error per reader poll (default 3; 0: all)
 *   SOAK_CL_PROFILE       1: device time per kernel/transfer, idle gaps, host time (profile.c)
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "soak_interposer.h"

SOAK_HIDDEN soak_state soak_g;
SOAK_HIDDEN SOAK_TLS int soak_depth;

/* Lets soak (and a second copy of this library) tell that a library is the interposer. */
SOAK_EXPORT const int soak_interposer_abi = SOAK_INTERPOSER_VERSION;

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static __thread int in_init;
static void *real_handle;
static char real_path[1024];
static char stats_path[4096];

enum { ACT_ERROR, ACT_SKIP, ACT_CORRUPT };

struct soak_rule {
    soak_rule *next;
    int code;
    int action;          /* ACT_*: fail with code, skip (silent), corrupt (silent) */
    int corrupt_mode;    /* SOAK_CORRUPT_* */
    uint64_t corrupt_words; /* 0: all */
    uint64_t nth, every, from, count, seed;
    double p;
    int has_p, has_after;
    uint64_t after_ns;
    uint64_t fired;
    uint64_t matched;    /* kernel:GLOB: calls whose kernel matched so far */
    char kernel[96];     /* kernel:GLOB (fnmatch), "" = any */
    char text[160];
};

/* silent faults: which entry points take which action (silent.c implements them; hooks.h) */
static int can_skip(int api) { return api == SOAK_ID_clEnqueueNDRangeKernel; }
static int can_corrupt(int api)
{
    return api == SOAK_ID_clEnqueueWriteBuffer || api == SOAK_ID_clEnqueueCopyBuffer ||
           api == SOAK_ID_clEnqueueWriteImage || api == SOAK_ID_clEnqueueCopyImage ||
           api == SOAK_ID_clEnqueueUnmapMemObject;
}
#define CORRUPT_APIS "clEnqueueWriteBuffer, clEnqueueCopyBuffer, clEnqueueWriteImage, clEnqueueCopyImage, " \
                     "clEnqueueUnmapMemObject"
SOAK_HIDDEN int soak_map_tracking; /* silent.c: remember mapped regions (a corrupt rule on unmap) */

static const char *kind_names[SOAK_N_KINDS] = {
    "context", "queue", "buffer", "subbuffer", "image", "pipe", "mem_other",
    "svm", "program", "kernel", "event", "sampler",
};

int soak_api_id(const char *name)
{
    int lo = 0, hi = SOAK_N_API - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        int c = strcmp(name, soak_wrappers[mid].name);
        if (c == 0)
            return soak_wrappers[mid].id;
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return -1;
}

static void config_error(const char *what, const char *text, const char *err)
{
    fprintf(stderr, "soak-interposer: %s: bad rule \"%s\": %s (rule ignored)\n", what, text, err);
    char buf[768];
    soak_json j;
    soak_json_begin(&j, buf, sizeof buf, "config_error");
    soak_json_common(&j, 0);
    soak_json_str(&j, "what", what);
    soak_json_str(&j, "rule", text);
    soak_json_str(&j, "error", err);
    soak_rec_write(buf, soak_json_end(&j), 0);
}

/* ---- numbers ---- */

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || *s == '-')
        return -1;
    *out = v;
    return 0;
}

/* bytes with an optional K/M/G/T suffix (powers of 1024; "KiB", "MB" ... accepted) */
static int parse_bytes(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *s == '-')
        return -1;
    uint64_t mul = 1;
    switch (*end) {
    case 0: break;
    case 'k': case 'K': mul = 1ull << 10; end++; break;
    case 'm': case 'M': mul = 1ull << 20; end++; break;
    case 'g': case 'G': mul = 1ull << 30; end++; break;
    case 't': case 'T': mul = 1ull << 40; end++; break;
    default: return -1;
    }
    if (mul > 1 && (*end == 'i' || *end == 'I'))
        end++;
    if (mul > 1 && (*end == 'b' || *end == 'B'))
        end++;
    if (*end)
        return -1;
    *out = (uint64_t)v * mul;
    return 0;
}

static int parse_code(const char *s, int *out)
{
    for (const soak_code_name *e = soak_code_names; e->name; e++)
        if (strcmp(e->name, s) == 0) {
            *out = e->code;
            return e->code < 0 ? 0 : -1; /* CL_SUCCESS is named (silent faults' records), not an error */
        }
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v >= 0 || v < -100000)
        return -1;
    *out = (int)v;
    return 0;
}

/* ---- fault rules:  API[=CODE][@TRIGGER[,TRIGGER...]]  separated by ';' ---- */

static const char *parse_rule(char *text, soak_rule *r, int *api)
{
    char *at = strchr(text, '@');
    if (at)
        *at++ = 0;
    char *eq = strchr(text, '=');
    if (eq)
        *eq++ = 0;
    *api = soak_api_id(text);
    if (*api < 0)
        return "unknown OpenCL entry point";
    if (soak_api_flags[*api] & SOAK_API_VOID)
        return "this entry point returns void and cannot fail";
    if (*api == SOAK_ID_clGetExtensionFunctionAddress || *api == SOAK_ID_clGetExtensionFunctionAddressForPlatform)
        return "clGetExtensionFunctionAddress* cannot be failed";
    r->code = CL_OUT_OF_RESOURCES;
    if (eq && strcmp(eq, "skip") == 0) {
        if (!can_skip(*api))
            return "skip applies to clEnqueueNDRangeKernel only";
        r->action = ACT_SKIP;
        r->code = 0;
    } else if (eq && strncmp(eq, "corrupt", 7) == 0 && (eq[7] == 0 || eq[7] == ':')) {
        if (!can_corrupt(*api))
            return "corrupt applies to " CORRUPT_APIS;
        r->action = ACT_CORRUPT;
        r->code = 0;
        r->corrupt_mode = SOAK_CORRUPT_NAN;
        r->corrupt_words = 1;
        char *m = eq[7] ? eq + 8 : 0, *w = m ? strchr(m, ':') : 0;
        if (w)
            *w++ = 0;
        if (m && strcmp(m, "nan") == 0)
            r->corrupt_mode = SOAK_CORRUPT_NAN;
        else if (m && strcmp(m, "bitflip") == 0)
            r->corrupt_mode = SOAK_CORRUPT_BITFLIP;
        else if (m)
            return "corrupt is corrupt[:nan|:bitflip][:WORDS] (WORDS a positive integer or all)";
        if (w && strcmp(w, "all") == 0)
            r->corrupt_words = 0;
        else if (w && (parse_u64(w, &r->corrupt_words) || !r->corrupt_words))
            return "corrupt is corrupt[:nan|:bitflip][:WORDS] (WORDS a positive integer or all)";
    } else if (eq && parse_code(eq, &r->code)) {
        return "ACTION must be a negative integer, a CL_* error name, skip or corrupt[:nan|:bitflip][:WORDS]";
    }
    r->seed = 1;
    if (!at)
        return 0;
    for (char *save = 0, *t = strtok_r(at, ",", &save); t; t = strtok_r(0, ",", &save)) {
        char *colon = strchr(t, ':');
        if (!colon)
            return "a trigger is KEY:VALUE (nth, every, from, count, p, seed, after, kernel)";
        *colon++ = 0;
        uint64_t v;
        if (strcmp(t, "nth") == 0 || strcmp(t, "every") == 0 || strcmp(t, "from") == 0 ||
            strcmp(t, "count") == 0 || strcmp(t, "seed") == 0) {
            if (parse_u64(colon, &v) || (v == 0 && strcmp(t, "seed") != 0))
                return "nth/every/from/count take a positive integer, seed an integer";
            if (t[0] == 'n') r->nth = v;
            else if (t[0] == 'e') r->every = v;
            else if (t[0] == 'f') r->from = v;
            else if (t[0] == 'c') r->count = v;
            else r->seed = v;
        } else if (strcmp(t, "p") == 0) {
            char *end;
            double p = strtod(colon, &end);
            if (end == colon || *end || !(p >= 0.0 && p <= 1.0))
                return "p takes a probability between 0 and 1";
            r->p = p;
            r->has_p = 1;
        } else if (strcmp(t, "after") == 0) {
            char *end;
            double s = strtod(colon, &end);
            if (end == colon || !(s >= 0.0))
                return "after takes seconds, e.g. after:30 or after:1.5s or after:200ms";
            if (strcmp(end, "ms") == 0)
                s /= 1000.0;
            else if (*end && strcmp(end, "s") != 0)
                return "after takes seconds, e.g. after:30 or after:1.5s or after:200ms";
            r->after_ns = (uint64_t)(s * 1e9);
            r->has_after = 1;
        } else if (strcmp(t, "kernel") == 0) {
            if (!(soak_api_flags[*api] & SOAK_API_KERNEL))
                return "kernel:GLOB applies to entry points that take a cl_kernel (clEnqueueNDRangeKernel, "
                       "clSetKernelArg, ...)";
            if (!*colon || strlen(colon) >= sizeof r->kernel)
                return "kernel takes a glob of kernel names (fnmatch: * ? [..]), at most 95 characters";
            snprintf(r->kernel, sizeof r->kernel, "%s", colon);
        } else {
            return "unknown trigger (nth, every, from, count, p, seed, after, kernel)";
        }
    }
    return 0;
}

static void load_rules(const char *spec)
{
    if (!spec || !*spec)
        return;
    char *copy = strdup(spec);
    if (!copy)
        return;
    for (char *save = 0, *t = strtok_r(copy, ";\n", &save); t; t = strtok_r(0, ";\n", &save)) {
        while (*t == ' ' || *t == '\t')
            t++;
        size_t n = strlen(t);
        while (n && (t[n - 1] == ' ' || t[n - 1] == '\t' || t[n - 1] == '\r'))
            t[--n] = 0;
        if (!n)
            continue;
        soak_rule *r = calloc(1, sizeof *r);
        if (!r)
            break;
        snprintf(r->text, sizeof r->text, "%s", t);
        char work[512];
        snprintf(work, sizeof work, "%s", t);
        int api = -1;
        const char *err = parse_rule(work, r, &api);
        if (err) {
            config_error("SOAK_CL_FAULTS", t, err);
            free(r);
            continue;
        }
        if (r->action == ACT_CORRUPT && api == SOAK_ID_clEnqueueUnmapMemObject)
            soak_map_tracking = 1;
        /* append, so rules fire in the order given */
        soak_rule **tail = &soak_g.rules[api];
        while (*tail)
            tail = &(*tail)->next;
        *tail = r;
    }
    free(copy);
}

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

cl_int soak_fault_slow(soak_call *c)
{
    int named = 0; /* c->kernel asked for (kernel:GLOB rules) */
    soak_rule *hit = 0;
    uint64_t hit_n = 0;
    for (soak_rule *r = soak_g.rules[c->id]; r; r = r->next) {
        /* the call's number: the entry point's, or with kernel:GLOB the rule's count of matching calls
         * (every rule counts its matches, also when an earlier rule took the call) */
        uint64_t n = c->index;
        if (r->kernel[0]) {
            if (!c->kobj)
                continue;
            if (!named) {
                soak_kernel_name(c->kobj, c->kernel, sizeof c->kernel);
                named = 1;
            }
            if (fnmatch(r->kernel, c->kernel, 0) != 0)
                continue;
            n = SOAK_ADD(&r->matched, 1) + 1;
        }
        if (hit)
            continue;
        if (r->nth && n != r->nth)
            continue;
        if (r->every && n % r->every)
            continue;
        if (r->from && n < r->from)
            continue;
        if (r->has_after && soak_now_ns() - soak_g.hdr->start_mono_ns < r->after_ns)
            continue;
        if (r->has_p) {
            /* a pure function of (seed, entry point, call number): same seed, same calls fail */
            uint64_t x = splitmix64(r->seed ^ splitmix64(n * 1315423911ull + (uint64_t)c->id));
            if ((double)(x >> 11) * (1.0 / 9007199254740992.0) >= r->p)
                continue;
        }
        uint64_t fired = SOAK_ADD(&r->fired, 1);
        if (r->count && fired >= r->count)
            continue;
        hit = r;
        hit_n = n;
    }
    if (!hit)
        return 0;
    c->why = hit->text;
    if (hit->action == ACT_ERROR) {
        c->flags |= SOAK_CALL_INJECTED;
        return hit->code;
    }
    /* silent: the call goes on (or is skipped) and returns CL_SUCCESS; silent.c records it */
    c->flags |= hit->action == ACT_SKIP ? SOAK_CALL_SKIP : SOAK_CALL_CORRUPT;
    c->corrupt_mode = hit->corrupt_mode;
    c->corrupt_words = hit->corrupt_words;
    c->corrupt_seed = splitmix64(hit->seed ^ splitmix64(hit_n * 0x9E3779B97F4A7C15ull + (uint64_t)c->id));
    return 0;
}

/* ---- stats file ---- */

/* The library loaded again in the same process (an engine that unloads and reloads OpenCL):
 * the stats file of the earlier load keeps its counts under another name,
 * <path without .stats>.r<its start_unix_ns>.stats, so nothing counted is lost. */
static void keep_earlier_stats(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    soak_stats_header old;
    ssize_t n = read(fd, &old, sizeof old);
    close(fd);
    if (n != (ssize_t)sizeof old || memcmp(old.magic, SOAK_STATS_MAGIC, 8) != 0)
        return;
    char moved[4200];
    size_t len = strlen(path);
    int dot = len > 6 && strcmp(path + len - 6, ".stats") == 0;
    snprintf(moved, sizeof moved, "%.*s.r%llu%s", (int)(dot ? len - 6 : len), path,
             (unsigned long long)old.start_unix_ns, dot ? ".stats" : "");
    rename(path, moved);
}

static void setup_stats(void)
{
    size_t size = sizeof(soak_stats_header) + SOAK_N_KINDS * sizeof(soak_stats_kind) +
                  SOAK_N_API * sizeof(soak_stats_api) + SOAK_AGG_SLOTS * sizeof(soak_stats_agg);
    void *mem = 0;
    int mapped = 0;
    const char *env = getenv("SOAK_CL_STATS");
    if (env && *env) {
        soak_expand_path(env, stats_path, sizeof stats_path);
        keep_earlier_stats(stats_path);
        int fd = open(stats_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd >= 0 && ftruncate(fd, (off_t)size) == 0) {
            mem = mmap(0, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            if (mem == MAP_FAILED)
                mem = 0;
            mapped = mem != 0;
        }
        if (!mem)
            fprintf(stderr, "soak-interposer: cannot map SOAK_CL_STATS %s: %s (stats kept in memory)\n",
                    stats_path, strerror(errno));
        if (fd >= 0)
            close(fd);
    }
    if (!mem) {
        stats_path[0] = 0;
        mem = calloc(1, size);
        if (!mem)
            abort();
    }
    soak_stats_header *h = mem;
    h->version = SOAK_STATS_VERSION;
    h->header_size = sizeof(soak_stats_header);
    h->n_kinds = SOAK_N_KINDS;
    h->kind_size = sizeof(soak_stats_kind);
    h->n_api = SOAK_N_API;
    h->api_size = sizeof(soak_stats_api);
    h->pid = (uint64_t)getpid();
    h->start_mono_ns = soak_now_ns();
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    h->start_unix_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    soak_g.kinds = (soak_stats_kind *)((char *)mem + sizeof *h);
    soak_g.api = (soak_stats_api *)((char *)soak_g.kinds + SOAK_N_KINDS * sizeof(soak_stats_kind));
    /* aggregated error counts only where a reader can see them (a mapped file); without one,
     * every error gets its own record as before */
    h->n_agg = mapped ? SOAK_AGG_SLOTS : 0;
    h->agg_size = sizeof(soak_stats_agg);
    soak_g.agg = mapped ? (soak_stats_agg *)((char *)soak_g.api + SOAK_N_API * sizeof(soak_stats_api)) : 0;
    for (int i = 0; i < SOAK_N_KINDS; i++)
        snprintf(soak_g.kinds[i].name, sizeof soak_g.kinds[i].name, "%s", kind_names[i]);
    for (int i = 0; i < SOAK_N_API; i++)
        snprintf(soak_g.api[i].name, sizeof soak_g.api[i].name, "%s", soak_api_names[i]);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    memcpy(h->magic, SOAK_STATS_MAGIC, 8);
    soak_g.hdr = h;
}

/* ---- the real library ---- */

static const char *const default_real[] = {
#if defined(__ANDROID__)
#if defined(__LP64__)
    "/vendor/lib64/libOpenCL.so", "/system/vendor/lib64/libOpenCL.so", "/system/lib64/libOpenCL.so",
    "/vendor/lib64/egl/libGLES_mali.so", "/system/vendor/lib64/egl/libGLES_mali.so",
    "/system/lib64/egl/libGLES_mali.so", "/vendor/lib64/libOpenCL-pixel.so",
#else
    "/vendor/lib/libOpenCL.so", "/system/vendor/lib/libOpenCL.so", "/system/lib/libOpenCL.so",
    "/vendor/lib/egl/libGLES_mali.so", "/system/vendor/lib/egl/libGLES_mali.so",
#endif
#else
    "libOpenCL.so.1",
#endif
    0,
};

static const char *open_real(void)
{
    static char err[512];
    const char *env = getenv("SOAK_CL_REAL_LIB");
    const char *const *list = default_real;
    const char *one[2] = {env, 0};
    if (env && *env)
        list = one;
    err[0] = 0;
    for (; *list; list++) {
        void *h = dlopen(*list, RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            const char *e = dlerror();
            snprintf(err, sizeof err, "%s", e ? e : *list);
            continue;
        }
        const int *abi = dlsym(h, "soak_interposer_abi");
        if (abi) {
            snprintf(err, sizeof err, "%s is the soak interposer itself, not the real OpenCL library", *list);
            dlclose(h);
            continue;
        }
        real_handle = h;
        snprintf(real_path, sizeof real_path, "%s", *list);
        return 0;
    }
    return err[0] ? err : "no real OpenCL library candidates";
}

void *soak_resolve_late(int id)
{
    if (in_init)
        return 0; /* not yet: try again once loaded */
    soak_g.tried[id] = 1;
    if (!real_handle)
        return 0;
    /* an extension entry point the loader does not export: ask the loader */
    void *(CL_API_CALL *gefa)(const char *) =
        (void *(CL_API_CALL *)(const char *))soak_g.real[SOAK_ID_clGetExtensionFunctionAddress];
    void *p = gefa ? gefa(soak_api_names[id]) : 0;
    if (p)
        __atomic_store_n(&soak_g.real[id], p, __ATOMIC_RELEASE);
    return p;
}

static void init_body(void)
{
    in_init = 1;
    setup_stats();
    soak_rec_open();
    const char *v = getenv("SOAK_CL_GPU_OVERRIDE");
    soak_g.gpu_override = v && *v && strcmp(v, "0") != 0;
    v = getenv("SOAK_CL_MEM_RECORDS");
    soak_g.mem_records = !(v && strcmp(v, "0") == 0);
    soak_g.max_records = 100000;
    v = getenv("SOAK_CL_MAX_RECORDS");
    if (v && *v)
        parse_u64(v, &soak_g.max_records);
    v = getenv("SOAK_CL_PROFILE");
    soak_g.profile = v && *v && strcmp(v, "0") != 0;
    if (soak_g.profile)
        soak_profile_init();
    soak_g.error_samples = SOAK_AGG_SAMPLES;
    v = getenv("SOAK_CL_ERROR_SAMPLES");
    if (v && *v)
        parse_u64(v, &soak_g.error_samples);
    v = getenv("SOAK_CL_MEM_LIMIT");
    if (v && *v) {
        if (parse_bytes(v, &soak_g.mem_limit))
            config_error("SOAK_CL_MEM_LIMIT", v, "expected bytes, e.g. 536870912 or 512M or 2G");
        soak_g.hdr->mem_limit = soak_g.mem_limit;
    }
    const char *err = open_real();
    if (!err)
        for (int i = 0; i < SOAK_N_API; i++)
            soak_g.real[i] = dlsym(real_handle, soak_api_names[i]);
    else
        fprintf(stderr, "soak-interposer: cannot load the real OpenCL library: %s "
                        "(set SOAK_CL_REAL_LIB to its path)\n", err);
    soak_g.hdr->flags |= (soak_g.gpu_override ? SOAK_STATS_FLAG_OVERRIDE : 0) |
                         (err ? 0 : SOAK_STATS_FLAG_REAL_LOADED);
    load_rules(getenv("SOAK_CL_FAULTS"));

    char buf[2048];
    soak_json j;
    soak_json_begin(&j, buf, sizeof buf, "start");
    soak_json_common(&j, 0);
    soak_json_uint(&j, "version", SOAK_INTERPOSER_VERSION);
    soak_json_uint(&j, "unix_ns", soak_g.hdr->start_unix_ns);
    soak_json_str(&j, "real", err ? getenv("SOAK_CL_REAL_LIB") : real_path);
    soak_json_bool(&j, "real_ok", !err);
    Dl_info di;
    if (!err && soak_g.real[SOAK_ID_clGetPlatformIDs] && dladdr(soak_g.real[SOAK_ID_clGetPlatformIDs], &di) &&
        di.dli_fname)
        soak_json_str(&j, "real_path", di.dli_fname);
    if (err)
        soak_json_str(&j, "error", err);
    soak_json_str(&j, "stats", stats_path[0] ? stats_path : 0);
    soak_json_str(&j, "faults", getenv("SOAK_CL_FAULTS"));
    soak_json_bool(&j, "gpu_override", soak_g.gpu_override);
    soak_json_uint(&j, "mem_limit", soak_g.mem_limit);
    soak_json_uint(&j, "n_api", SOAK_N_API);
    soak_json_bool(&j, "profile", soak_g.profile);
    soak_rec_write(buf, soak_json_end(&j), 0);
    in_init = 0;
    __atomic_store_n(&soak_g.ready, 1, __ATOMIC_RELEASE);
}

void soak_init(void)
{
    if (in_init)
        return; /* the real library called back into us while we load it */
    pthread_once(&init_once, init_body);
}

__attribute__((destructor)) static void soak_fini(void)
{
    if (!__atomic_load_n(&soak_g.ready, __ATOMIC_ACQUIRE))
        return;
    if (soak_g.profile)
        soak_profile_fini();
    char buf[2048];
    soak_json j;
    soak_json_begin(&j, buf, sizeof buf, "exit");
    soak_json_common(&j, 0);
    soak_json_uint(&j, "calls", soak_g.hdr->calls);
    soak_json_uint(&j, "errors", soak_g.hdr->errors);
    soak_json_uint(&j, "injected", soak_g.hdr->injected);
    soak_json_uint(&j, "live_bytes", soak_g.hdr->live_bytes);
    char live[1024];
    soak_obj_exit_summary(live, sizeof live);
    soak_json_raw(&j, "live", live);
    soak_rec_write(buf, soak_json_end(&j), 0);
    __atomic_fetch_or(&soak_g.hdr->flags, SOAK_STATS_FLAG_EXITED, __ATOMIC_RELEASE);
}

/* ---- clGetExtensionFunctionAddress(ForPlatform): hand each wrapped name its wrapper ---- */

static uint8_t ext_noted[SOAK_N_API];

static void *wrap_ext(soak_call *c, const char *name, void *p)
{
    if (!name)
        return p;
    int id = soak_api_id(name);
    if (id < 0) {
        if (p && c) {
            char buf[512];
            soak_json j;
            soak_json_begin(&j, buf, sizeof buf, "ext");
            soak_json_common(&j, c);
            soak_json_str(&j, "function", name);
            soak_json_bool(&j, "wrapped", 0);
            soak_rec_write(buf, soak_json_end(&j), 0);
        }
        return p;
    }
    if (!p)
        return 0;
    if (!__atomic_load_n(&soak_g.real[id], __ATOMIC_ACQUIRE))
        __atomic_store_n(&soak_g.real[id], p, __ATOMIC_RELEASE);
    if (c && !__atomic_exchange_n(&ext_noted[id], 1, __ATOMIC_RELAXED)) {
        char buf[512];
        soak_json j;
        soak_json_begin(&j, buf, sizeof buf, "ext");
        soak_json_common(&j, c);
        soak_json_str(&j, "function", name);
        soak_json_bool(&j, "wrapped", 1);
        soak_rec_write(buf, soak_json_end(&j), 0);
    }
    return soak_wrappers[id].fn;
}

typedef void *(CL_API_CALL *soak_pfn_gefa)(const char *);
typedef void *(CL_API_CALL *soak_pfn_gefap)(cl_platform_id, const char *);

SOAK_EXPORT void *CL_API_CALL clGetExtensionFunctionAddress(const char *func_name)
{
    soak_call c;
    soak_pfn_gefa fn = (soak_pfn_gefa)soak_real_fn(SOAK_ID_clGetExtensionFunctionAddress);
    int tracked = soak_enter(&c, SOAK_ID_clGetExtensionFunctionAddress);
    void *p = fn ? fn(func_name) : 0;
    p = wrap_ext(tracked ? &c : 0, func_name, p);
    if (tracked)
        soak_exit(&c, 0);
    return p;
}

SOAK_EXPORT void *CL_API_CALL clGetExtensionFunctionAddressForPlatform(cl_platform_id platform,
                                                                       const char *func_name)
{
    soak_call c;
    soak_pfn_gefap fn = (soak_pfn_gefap)soak_real_fn(SOAK_ID_clGetExtensionFunctionAddressForPlatform);
    int tracked = soak_enter(&c, SOAK_ID_clGetExtensionFunctionAddressForPlatform);
    void *p = fn ? fn(platform, func_name) : 0;
    p = wrap_ext(tracked ? &c : 0, func_name, p);
    if (tracked)
        soak_exit(&c, 0);
    return p;
}

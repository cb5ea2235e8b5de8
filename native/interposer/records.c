/* The record file: JSON lines, one write(2) per record on an O_APPEND fd,
 * so a record is either whole in the file or absent, and a crash of the
 * process loses nothing already returned from write(2).  See FORMAT.md. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "soak_interposer.h"

static int rec_fd = -1;
static uint64_t rec_errors_written;

static void expand_pid(const char *in, char *out, size_t cap)
{
    size_t o = 0;
    for (const char *p = in; *p && o + 24 < cap; p++) {
        if (p[0] == '%' && p[1] == 'p') {
            o += (size_t)snprintf(out + o, cap - o, "%ld", (long)getpid());
            p++;
        } else {
            out[o++] = *p;
        }
    }
    out[o] = 0;
}

SOAK_HIDDEN void soak_expand_path(const char *in, char *out, size_t cap) { expand_pid(in, out, cap); }

void soak_rec_open(void)
{
    const char *path = getenv("SOAK_CL_TRACE");
    if (!path || !*path)
        return;
    char full[4096];
    expand_pid(path, full, sizeof full);
    rec_fd = open(full, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (rec_fd < 0)
        fprintf(stderr, "soak-interposer: cannot open SOAK_CL_TRACE %s: %s (records off)\n", full, strerror(errno));
}

int soak_rec_write(const char *buf, size_t len, int is_error)
{
    if (rec_fd < 0) {
        if (is_error && soak_g.hdr)
            SOAK_ADD(&soak_g.hdr->records_dropped, 1);
        return 0;
    }
    if (is_error) {
        uint64_t n = SOAK_ADD(&rec_errors_written, 1);
        if (n >= soak_g.max_records) {
            SOAK_ADD(&soak_g.hdr->records_dropped, 1);
            return 0;
        }
    }
    ssize_t w;
    do {
        w = write(rec_fd, buf, len);
    } while (w < 0 && errno == EINTR);
    if (w == (ssize_t)len && soak_g.hdr)
        SOAK_ADD(&soak_g.hdr->records, 1);
    return w == (ssize_t)len;
}

const char *soak_code_to_name(int code)
{
    for (const soak_code_name *e = soak_code_names; e->name; e++)
        if (e->code == code)
            return e->name;
    return 0;
}

uint64_t soak_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- a tiny JSON writer; output is truncated (never overflows) at cap-2 ---- */

static void put(soak_json *j, const char *s, size_t n)
{
    if (j->len + n + 3 > j->cap)
        n = j->len + 3 < j->cap ? j->cap - j->len - 3 : 0;
    memcpy(j->buf + j->len, s, n);
    j->len += n;
}

static void key(soak_json *j, const char *k)
{
    if (j->len > 1)
        put(j, ",", 1);
    put(j, "\"", 1);
    put(j, k, strlen(k));
    put(j, "\":", 2);
}

void soak_json_open(soak_json *j, char *buf, size_t cap)
{
    j->buf = buf;
    j->cap = cap;
    j->len = 0;
    put(j, "{", 1);
}

size_t soak_json_close(soak_json *j)
{
    /* put() always leaves room for these 2 bytes (+1 spare) */
    j->buf[j->len++] = '}';
    j->buf[j->len] = 0;
    return j->len;
}

void soak_json_begin(soak_json *j, char *buf, size_t cap, const char *kind)
{
    soak_json_open(j, buf, cap);
    soak_json_str(j, "type", kind);
}

void soak_json_strn(soak_json *j, const char *k, const char *val, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    key(j, k);
    if (!val) {
        put(j, "null", 4);
        return;
    }
    put(j, "\"", 1);
    for (size_t i = 0; i < n && val[i]; i++) {
        unsigned char ch = (unsigned char)val[i];
        size_t run = 0; /* characters that need no escape: copied at once (records are on the engine's thread) */
        while (i + run < n && val[i + run] && (unsigned char)val[i + run] >= 0x20 && val[i + run] != '"' &&
               val[i + run] != '\\' && val[i + run] != 0x7f)
            run++;
        if (run) {
            size_t room = j->cap > j->len + 8 ? j->cap - 8 - j->len : 0;
            size_t take = run < room ? run : room ? room : 1; /* as one at a time would, up to the cap */
            put(j, &val[i], take);
            i += take - 1;
        } else if (ch == '"' || ch == '\\') {
            char e[2] = {'\\', (char)ch};
            put(j, e, 2);
        } else if (ch == '\n') {
            put(j, "\\n", 2);
        } else if (ch == '\t') {
            put(j, "\\t", 2);
        } else if (ch < 0x20 || ch == 0x7f) {
            char e[6] = {'\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15]};
            put(j, e, 6);
        }
        if (j->len + 8 >= j->cap)
            break;
    }
    put(j, "\"", 1);
}

void soak_json_str(soak_json *j, const char *k, const char *val) { soak_json_strn(j, k, val, (size_t)-1); }

/* v in decimal at t (20 digits at most), without snprintf: a profile record has hundreds of numbers */
static size_t dec(char *t, uint64_t v)
{
    char r[20];
    size_t n = 0;
    do
        r[n++] = (char)('0' + v % 10);
    while (v /= 10);
    for (size_t i = 0; i < n; i++)
        t[i] = r[n - 1 - i];
    return n;
}

void soak_json_int(soak_json *j, const char *k, int64_t v)
{
    char t[24];
    size_t o = 0;
    key(j, k);
    if (v < 0)
        t[o++] = '-';
    o += dec(t + o, v < 0 ? 0 - (uint64_t)v : (uint64_t)v);
    put(j, t, o);
}

void soak_json_uint(soak_json *j, const char *k, uint64_t v)
{
    char t[24];
    key(j, k);
    put(j, t, dec(t, v));
}

void soak_json_ptr(soak_json *j, const char *k, const void *p)
{
    char t[40];
    key(j, k);
    put(j, t, (size_t)snprintf(t, sizeof t, "\"0x%llx\"", (unsigned long long)(uintptr_t)p));
}

void soak_json_bool(soak_json *j, const char *k, int v)
{
    key(j, k);
    put(j, v ? "true" : "false", v ? 4 : 5);
}

void soak_json_append(soak_json *j, const char *raw) { put(j, raw, strlen(raw)); }

void soak_json_raw(soak_json *j, const char *k, const char *raw)
{
    key(j, k);
    put(j, raw, strlen(raw));
}

void soak_json_common(soak_json *j, const soak_call *c)
{
    soak_json_int(j, "pid", (int64_t)getpid());
    soak_json_uint(j, "seq", c ? c->seq : 0);
    soak_json_uint(j, "t_ns", soak_now_ns());
    soak_json_int(j, "tid", (int64_t)syscall(SYS_gettid));
    if (c)
        soak_json_str(j, "api", soak_api_names[c->id]);
}

size_t soak_json_end(soak_json *j)
{
    /* put() always leaves room for these 2 bytes (+1 spare) */
    j->buf[j->len++] = '}';
    j->buf[j->len++] = '\n';
    return j->len;
}

/* ---- error aggregation: one slot per (entry point, code, injected, key) in the stats file ---- */

static pthread_mutex_t agg_lock = PTHREAD_MUTEX_INITIALIZER;

static void error_key(const soak_call *c, char *key, size_t cap)
{
    key[0] = 0;
    if (c->kernel[0])
        snprintf(key, cap, "kernel=%s", c->kernel);
    else if (c->param >= 0 && c->param_name)
        snprintf(key, cap, "param=%s", c->param_name);
    else if (c->param >= 0)
        snprintf(key, cap, "param=0x%llx", (unsigned long long)c->param);
}

static uint64_t hash_key(uint32_t api, int code, int injected, const char *key)
{
    uint64_t h = 1469598103934665603ull ^ ((uint64_t)api << 32 | (uint32_t)code) ^ (uint64_t)injected << 63;
    for (const char *p = key; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    return h ^ (h >> 29);
}

/* Counts this error in its slot; returns the slot index and sets *nth to its occurrence number
 * in the current epoch, or returns -1 when there is no slot (no stats file, table full). */
static int agg_count(const soak_call *c, cl_int code, int injected, const char *key, const char *code_name,
                     uint64_t *nth, uint64_t *epoch)
{
    if (!soak_g.agg)
        return -1;
    uint64_t h = hash_key(c->id, code, injected, key);
    int found = -1;
    pthread_mutex_lock(&agg_lock);
    for (unsigned probe = 0; probe < SOAK_AGG_SLOTS; probe++) {
        unsigned i = (unsigned)(h + probe) & (SOAK_AGG_SLOTS - 1);
        soak_stats_agg *a = &soak_g.agg[i];
        uint32_t fl = __atomic_load_n(&a->flags, __ATOMIC_RELAXED);
        if (!(fl & SOAK_AGG_USED)) {
            a->api = c->id;
            a->code = code;
            snprintf(a->key, sizeof a->key, "%s", key);
            snprintf(a->code_name, sizeof a->code_name, "%s", code_name);
            __atomic_store_n(&a->first_seq, c->seq, __ATOMIC_RELAXED);
            __atomic_store_n(&a->flags, SOAK_AGG_USED | (injected ? SOAK_AGG_INJECTED : 0), __ATOMIC_RELEASE);
            SOAK_ADD(&soak_g.hdr->agg_used, 1);
            found = (int)i;
            break;
        }
        if (a->api == c->id && a->code == code && !!(fl & SOAK_AGG_INJECTED) == !!injected &&
            strncmp(a->key, key, sizeof a->key - 1) == 0) {
            found = (int)i;
            break;
        }
    }
    if (found >= 0) {
        soak_stats_agg *a = &soak_g.agg[found];
        uint64_t ep = __atomic_load_n(&soak_g.hdr->epoch, __ATOMIC_RELAXED);
        if (a->epoch != ep) {
            __atomic_store_n(&a->epoch, ep, __ATOMIC_RELAXED);
            __atomic_store_n(&a->epoch_count, 0, __ATOMIC_RELAXED);
        }
        *nth = a->epoch_count + 1;
        *epoch = ep;
        __atomic_store_n(&a->epoch_count, *nth, __ATOMIC_RELAXED);
        __atomic_store_n(&a->last_seq, c->seq, __ATOMIC_RELAXED);
        __atomic_store_n(&a->last_t_ns, soak_now_ns(), __ATOMIC_RELAXED);
        /* the count last: a reader that sees it sees the fields above */
        __atomic_store_n(&a->count, a->count + 1, __ATOMIC_RELEASE);
    } else {
        SOAK_ADD(&soak_g.hdr->agg_overflow, 1);
    }
    pthread_mutex_unlock(&agg_lock);
    return found;
}

void soak_json_dims(soak_json *j, const char *k, const uint64_t *v, uint32_t dim)
{
    char t[96]; /* three 20-digit sizes */
    size_t o = 0;
    t[o++] = '[';
    for (uint32_t i = 0; i < dim && i < 3; i++) {
        if (i)
            t[o++] = ',';
        o += dec(t + o, v[i]);
    }
    t[o++] = ']';
    t[o] = 0;
    soak_json_raw(j, k, t);
}

static void record_call(soak_call *c, cl_int code, const char *action, const char *extra);

void soak_record_error(soak_call *c, cl_int code) { record_call(c, code, 0, 0); }

/* A silent fault: the call returns CL_SUCCESS, so it counts as injected but not as an error. */
void soak_record_silent(soak_call *c, const char *action, const char *extra)
{
    c->flags |= SOAK_CALL_INJECTED;
    record_call(c, CL_SUCCESS, action, extra);
}

static void record_call(soak_call *c, cl_int code, const char *action, const char *extra)
{
    int injected = (c->flags & SOAK_CALL_INJECTED) != 0;
    if (!action) {
        SOAK_ADD(&soak_g.hdr->errors, 1);
        SOAK_ADD(&soak_g.api[c->id].errors, 1);
    }
    if (injected) {
        SOAK_ADD(&soak_g.hdr->injected, 1);
        SOAK_ADD(&soak_g.api[c->id].injected, 1);
    }
    const char *name = soak_code_to_name(code); /* a silent fault: code 0, CL_SUCCESS */
    if (!name)
        name = "CL_UNKNOWN";
    char key[128];
    error_key(c, key, sizeof key);
    uint64_t nth = 0, epoch = 0;
    int slot = agg_count(c, code, injected, key, name, &nth, &epoch);
    if (slot >= 0 && soak_g.error_samples && nth > soak_g.error_samples)
        return; /* counted in its slot; enough samples of it this epoch */
    char buf[1024];
    soak_json j;
    soak_json_begin(&j, buf, sizeof buf, "error");
    soak_json_common(&j, c);
    soak_json_int(&j, "code", code);
    soak_json_str(&j, "code_name", name);
    soak_json_uint(&j, "index", c->index);
    soak_json_bool(&j, "injected", injected);
    if (c->why && (injected || (c->flags & SOAK_CALL_MISSING))) /* not a silent rule's, on a real error */
        soak_json_str(&j, "why", c->why);
    if (action)
        soak_json_str(&j, "action", action);
    if (c->flags & SOAK_CALL_MISSING)
        soak_json_bool(&j, "missing", 1);
    if (c->detail[0])
        soak_json_str(&j, "detail", c->detail);
    soak_json_str(&j, "key", key);
    if (c->kernel[0]) {
        soak_json_str(&j, "kernel", c->kernel);
        if (c->dim) {
            soak_json_dims(&j, "gws", c->gws, c->dim);
            if (c->has_lws)
                soak_json_dims(&j, "lws", c->lws, c->dim);
        }
    }
    if (c->param >= 0) {
        soak_json_uint(&j, "param", (uint64_t)c->param);
        if (c->param_name)
            soak_json_str(&j, "param_name", c->param_name);
    }
    if (extra && *extra)
        soak_json_append(&j, extra); /* ,"k":v,... */
    if (slot >= 0) {
        soak_json_int(&j, "agg", slot);
        soak_json_uint(&j, "epoch", epoch);
        soak_json_uint(&j, "nth", nth);
    }
    soak_rec_write(buf, soak_json_end(&j), 1);
}

void soak_note_param(soak_call *c, const soak_param_name *names, size_t n, uint64_t param)
{
    c->param = (int64_t)(uint32_t)param;
    c->param_name = 0;
    size_t lo = 0, hi = n;
    while (lo < hi) { /* names are sorted by value */
        size_t mid = (lo + hi) / 2;
        if (names[mid].value < (uint32_t)param)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < n && names[lo].value == (uint32_t)param)
        c->param_name = names[lo].name;
}

cl_int soak_missing(soak_call *c)
{
    c->flags |= SOAK_CALL_MISSING;
    c->why = "the real OpenCL library has no such entry point";
    if (c->id == SOAK_ID_clGetPlatformIDs)
        return -1001; /* CL_PLATFORM_NOT_FOUND_KHR */
    return CL_INVALID_OPERATION;
}

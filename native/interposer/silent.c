/* Silent faults: calls that return CL_SUCCESS but did not do their work (skip), or did it and
 * then had their destination perturbed in device memory (corrupt).  The fault rules pick the
 * calls (core.c, soak_fault_slow); the generated wrappers call these through hooks.h
 * (SOAK_SKIP_X, SOAK_CORRUPT_X).  Each one is an `error` record with code 0, `injected` and
 * `action` (FORMAT.md), so soak names the rule as the cause though no call failed.
 *
 * Corruption is done after the call: finish the queue, read the destination region back,
 * perturb 32-bit words at positions drawn from the rule's seed and the call's number, write
 * it back (blocking).  NaN is the word 0x7fc07fc0: a quiet NaN as fp32 and as two fp16 halves,
 * so it is a NaN whatever precision the buffer holds. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hooks.h"
#include "soak_interposer.h"

#define NAN_WORD 0x7fc07fc0u
#define SHOWN 8 /* positions listed in the record */

typedef cl_int(CL_API_CALL *pfn_finish)(cl_command_queue);
typedef cl_int(CL_API_CALL *pfn_read_buffer)(cl_command_queue, cl_mem, cl_bool, size_t, size_t, void *, cl_uint,
                                             const cl_event *, cl_event *);
typedef cl_int(CL_API_CALL *pfn_write_buffer)(cl_command_queue, cl_mem, cl_bool, size_t, size_t, const void *,
                                              cl_uint, const cl_event *, cl_event *);
typedef cl_int(CL_API_CALL *pfn_read_image)(cl_command_queue, cl_mem, cl_bool, const size_t *, const size_t *,
                                            size_t, size_t, void *, cl_uint, const cl_event *, cl_event *);
typedef cl_int(CL_API_CALL *pfn_write_image)(cl_command_queue, cl_mem, cl_bool, const size_t *, const size_t *,
                                             size_t, size_t, const void *, cl_uint, const cl_event *, cl_event *);
typedef cl_int(CL_API_CALL *pfn_image_info)(cl_mem, cl_image_info, size_t, void *, size_t *);
typedef cl_int(CL_API_CALL *pfn_marker)(cl_command_queue, cl_uint, const cl_event *, cl_event *);
typedef cl_int(CL_API_CALL *pfn_queue_info)(cl_command_queue, cl_command_queue_info, size_t, void *, size_t *);
typedef cl_event(CL_API_CALL *pfn_user_event)(cl_context, cl_int *);
typedef cl_int(CL_API_CALL *pfn_user_status)(cl_event, cl_int);

#define REAL(type, name) ((type)soak_g.real[SOAK_ID_##name])

static uint64_t next(uint64_t *s) /* splitmix64 */
{
    uint64_t x = (*s += 0x9E3779B97F4A7C15ull);
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* ---- skip ---- */

cl_int soak_skip_kernel(soak_call *c, cl_command_queue q, cl_kernel k, cl_uint dim, const size_t *gws,
                        const size_t *lws, cl_uint nw, const cl_event *wl, cl_event *ev)
{
    /* kernel name and sizes for the record (the detail string is built the way an error's is) */
    soak_kernel_error_detail(c, CL_INVALID_OPERATION, k, dim, gws, lws);
    const char *how = "none";
    cl_int rc = CL_SUCCESS;
    if (ev) {
        /* the caller waits on this: a marker completes when the kernel would have (in order, after
         * its wait list); without markers (OpenCL 1.1), a user event already complete */
        *ev = 0;
        pfn_marker marker = REAL(pfn_marker, clEnqueueMarkerWithWaitList);
        rc = marker ? marker(q, nw, wl, ev) : CL_INVALID_OPERATION;
        how = "marker";
        if (rc != CL_SUCCESS || !*ev) {
            pfn_queue_info qi = REAL(pfn_queue_info, clGetCommandQueueInfo);
            pfn_user_event ue = REAL(pfn_user_event, clCreateUserEvent);
            pfn_user_status us = REAL(pfn_user_status, clSetUserEventStatus);
            cl_context ctx = 0;
            cl_int e = CL_INVALID_OPERATION;
            if (qi && ue && us && qi(q, CL_QUEUE_CONTEXT, sizeof ctx, &ctx, 0) == CL_SUCCESS &&
                (*ev = ue(ctx, &e)) != 0 && e == CL_SUCCESS)
                e = us(*ev, CL_COMPLETE);
            how = "user_event";
            if (e != CL_SUCCESS || !*ev)
                return rc != CL_SUCCESS ? rc : e; /* as the launch itself would have: a real error */
            rc = CL_SUCCESS;
        }
        soak_event_done(c, rc, ev);
    }
    char extra[64];
    snprintf(extra, sizeof extra, ",\"event\":\"%s\"", how);
    soak_record_silent(c, "skip", extra);
    return rc;
}

/* ---- corrupt ---- */

typedef struct {
    uint64_t changed;
    uint64_t at[SHOWN];  /* byte offsets in the region of the first words changed */
    uint32_t bit[SHOWN]; /* bitflip: the bit flipped in each */
} perturbed;

static void perturb_word(unsigned char *p, size_t n, int mode, uint64_t *rng, uint32_t *bit)
{
    uint32_t w = 0;
    memcpy(&w, p, n);
    if (mode == SOAK_CORRUPT_BITFLIP) {
        *bit = (uint32_t)(next(rng) % (n * 8));
        w ^= 1u << *bit;
    } else {
        w = NAN_WORD;
    }
    memcpy(p, &w, n);
}

/* Perturbs c->corrupt_words words (0: all) of buf: the region is cut into that many strata of
 * whole words and one word is drawn in each, so the positions are distinct and spread. */
static void perturb(const soak_call *c, unsigned char *buf, uint64_t bytes, perturbed *out)
{
    memset(out, 0, sizeof *out);
    uint64_t rng = c->corrupt_seed;
    uint64_t nwords = bytes / 4;
    if (nwords == 0) { /* 1 to 3 bytes: one partial word */
        if (bytes)
            perturb_word(buf, (size_t)bytes, c->corrupt_mode, &rng, &out->bit[0]);
        out->changed = bytes ? 1 : 0;
        return;
    }
    uint64_t n = c->corrupt_words && c->corrupt_words < nwords ? c->corrupt_words : nwords;
    uint64_t q = nwords / n, r = nwords % n;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t start = i * q + (i < r ? i : r), size = q + (i < r);
        uint64_t pos = size > 1 ? start + next(&rng) % size : start;
        uint32_t bit = 0;
        perturb_word(buf + pos * 4, 4, c->corrupt_mode, &rng, &bit);
        if (out->changed < SHOWN) {
            out->at[out->changed] = pos * 4;
            out->bit[out->changed] = bit;
        }
        out->changed++;
    }
}

static void list(char *o, size_t cap, const char *key, const uint64_t *v64, const uint32_t *v32, uint64_t n)
{
    size_t len = strlen(o);
    len += (size_t)snprintf(o + len, cap - len, ",\"%s\":[", key);
    for (uint64_t i = 0; i < n && i < SHOWN && len < cap; i++)
        len += (size_t)snprintf(o + len, cap - len, "%s%llu", i ? "," : "",
                                (unsigned long long)(v64 ? v64[i] : v32[i]));
    if (len < cap)
        snprintf(o + len, cap - len, "]");
}

static void record_corrupt(soak_call *c, int image, const char *what, const void *mem, const perturbed *p,
                           const char *failed, cl_int rc)
{
    const char *mode = c->corrupt_mode == SOAK_CORRUPT_BITFLIP ? "bitflip" : "nan";
    char extra[700];
    snprintf(extra, sizeof extra, ",\"mode\":\"%s\",\"obj\":\"0x%llx\",%s,\"changed\":%llu", mode,
             (unsigned long long)(uintptr_t)mem, what, (unsigned long long)(p ? p->changed : 0));
    if (p && p->changed) {
        list(extra, sizeof extra, "at", p->at, 0, p->changed);
        if (c->corrupt_mode == SOAK_CORRUPT_BITFLIP)
            list(extra, sizeof extra, "bits", 0, p->bit, p->changed);
    }
    if (failed) { /* could not corrupt: still recorded, the rule fired */
        size_t len = strlen(extra);
        snprintf(extra + len, sizeof extra - len, ",\"corrupt_failed\":\"%s %d\"", failed, rc);
    }
    snprintf(c->detail, sizeof c->detail, "corrupt:%s %llu word(s) of %s%s", mode,
             (unsigned long long)(p ? p->changed : 0), image ? "image" : "buffer", failed ? " (failed)" : "");
    soak_record_silent(c, "corrupt", extra);
}

void soak_corrupt_buffer(soak_call *c, cl_command_queue q, cl_mem mem, size_t offset, size_t size)
{
    char what[96];
    snprintf(what, sizeof what, "\"offset\":%llu,\"bytes\":%llu", (unsigned long long)offset,
             (unsigned long long)size);
    pfn_finish finish = REAL(pfn_finish, clFinish);
    pfn_read_buffer rd = REAL(pfn_read_buffer, clEnqueueReadBuffer);
    pfn_write_buffer wr = REAL(pfn_write_buffer, clEnqueueWriteBuffer);
    if (!finish || !rd || !wr) {
        record_corrupt(c, 0, what, mem, 0, "no clEnqueueReadBuffer/WriteBuffer", CL_INVALID_OPERATION);
        return;
    }
    unsigned char *buf = size ? malloc(size) : 0;
    if (size && !buf) {
        record_corrupt(c, 0, what, mem, 0, "malloc", CL_OUT_OF_HOST_MEMORY);
        return;
    }
    perturbed p;
    cl_int rc = finish(q);
    if (rc == CL_SUCCESS && size)
        rc = rd(q, mem, CL_TRUE, offset, size, buf, 0, 0, 0);
    if (rc != CL_SUCCESS) {
        record_corrupt(c, 0, what, mem, 0, "read back", rc);
        free(buf);
        return;
    }
    perturb(c, buf, size, &p);
    if (size)
        rc = wr(q, mem, CL_TRUE, offset, size, buf, 0, 0, 0);
    free(buf);
    record_corrupt(c, 0, what, mem, &p, rc ? "write back" : 0, rc);
}

void soak_corrupt_image(soak_call *c, cl_command_queue q, cl_mem image, const size_t *origin, const size_t *region)
{
    size_t o[3] = {0, 0, 0}, r[3] = {1, 1, 1}, es = 0;
    for (int i = 0; i < 3; i++) {
        if (origin)
            o[i] = origin[i];
        if (region)
            r[i] = region[i];
    }
    char what[160];
    snprintf(what, sizeof what, "\"origin\":[%zu,%zu,%zu],\"region\":[%zu,%zu,%zu]", o[0], o[1], o[2], r[0], r[1],
             r[2]);
    pfn_finish finish = REAL(pfn_finish, clFinish);
    pfn_read_image rd = REAL(pfn_read_image, clEnqueueReadImage);
    pfn_write_image wr = REAL(pfn_write_image, clEnqueueWriteImage);
    pfn_image_info info = REAL(pfn_image_info, clGetImageInfo);
    if (!finish || !rd || !wr || !info) {
        record_corrupt(c, 1, what, image, 0, "no clEnqueueReadImage/WriteImage", CL_INVALID_OPERATION);
        return;
    }
    cl_int rc = info(image, CL_IMAGE_ELEMENT_SIZE, sizeof es, &es, 0);
    uint64_t bytes = (uint64_t)es * r[0] * r[1] * r[2];
    unsigned char *buf = rc == CL_SUCCESS && bytes ? malloc((size_t)bytes) : 0;
    if (rc != CL_SUCCESS || !buf) {
        record_corrupt(c, 1, what, image, 0, rc ? "element size" : "malloc", rc ? rc : CL_OUT_OF_HOST_MEMORY);
        return;
    }
    rc = finish(q);
    if (rc == CL_SUCCESS)
        rc = rd(q, image, CL_TRUE, o, r, 0, 0, buf, 0, 0, 0);
    if (rc != CL_SUCCESS) {
        record_corrupt(c, 1, what, image, 0, "read back", rc);
        free(buf);
        return;
    }
    perturbed p;
    perturb(c, buf, bytes, &p);
    rc = wr(q, image, CL_TRUE, o, r, 0, 0, buf, 0, 0, 0);
    free(buf);
    record_corrupt(c, 1, what, image, &p, rc ? "write back" : 0, rc);
}

/* ---- mapped regions, for corrupt on clEnqueueUnmapMemObject ---- */

typedef struct {
    cl_mem mem;
    const void *ptr;
    int image;
    size_t offset, size;
    size_t origin[3], region[3];
} mapping;

#define MAX_MAPS 1024
static pthread_mutex_t map_lock = PTHREAD_MUTEX_INITIALIZER;
static mapping maps[MAX_MAPS];
static int n_maps;
static SOAK_TLS int taken_ok; /* the unmap in progress on this thread found its mapping */
static SOAK_TLS mapping taken;

void soak_map_note(cl_mem mem, const void *ptr, int image, size_t offset, size_t size, const size_t *origin,
                   const size_t *region)
{
    mapping m = {mem, ptr, image, offset, size, {0, 0, 0}, {1, 1, 1}};
    for (int i = 0; i < 3; i++) {
        if (origin)
            m.origin[i] = origin[i];
        if (region)
            m.region[i] = region[i];
    }
    pthread_mutex_lock(&map_lock);
    if (n_maps < MAX_MAPS)
        maps[n_maps++] = m; /* more live maps than that: the later ones are not corrupted on unmap */
    pthread_mutex_unlock(&map_lock);
}

void soak_map_take(soak_call *c, cl_mem mem, const void *ptr)
{
    (void)c;
    taken_ok = 0;
    pthread_mutex_lock(&map_lock);
    for (int i = n_maps - 1; i >= 0; i--) {
        if (maps[i].mem == mem && maps[i].ptr == ptr) {
            taken = maps[i];
            taken_ok = 1;
            maps[i] = maps[--n_maps];
            break;
        }
    }
    pthread_mutex_unlock(&map_lock);
}

void soak_corrupt_unmapped(soak_call *c, cl_command_queue q, cl_mem mem, const void *ptr)
{
    if (!taken_ok || taken.mem != mem || taken.ptr != ptr) {
        record_corrupt(c, 0, "\"offset\":0,\"bytes\":0", mem, 0, "mapping unknown", CL_INVALID_VALUE);
        return;
    }
    taken_ok = 0;
    if (taken.image)
        soak_corrupt_image(c, q, mem, taken.origin, taken.region);
    else
        soak_corrupt_buffer(c, q, mem, taken.offset, taken.size);
}

/* Live OpenCL objects as the application sees them: created with a count of
 * 1, +1 per clRetain*, -1 per clRelease*, gone at 0.  Memory objects carry
 * their bytes; buffers, images, pipes and SVM add to live_bytes (sub-buffers
 * and images made from a buffer share their parent's memory and do not).
 * Also: the hooks the generated wrappers call (hooks.h), the memory limit,
 * the device-type override and build-failure records. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hooks.h"
#include "soak_interposer.h"

typedef struct {
    const void *key; /* 0 = empty */
    uint32_t kind;
    uint32_t refs;
    uint64_t bytes;   /* the object's size */
    uint64_t counted; /* what it added to live_bytes */
    char *name;       /* kernels: CL_KERNEL_FUNCTION_NAME once asked (malloc'd) */
} entry;

/* open addressing with linear probing and no tombstones (erase closes the gap), so objects
 * created and released by the million (an event per launch) leave no dead slots behind:
 * the table is sized by the most objects alive at once, not by how many came and went */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static entry *table;
static size_t cap, used; /* used: live entries */

static size_t hash_ptr(const void *p)
{
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return (size_t)x;
}

static entry *find(const void *key)
{
    if (!cap)
        return 0;
    for (size_t i = hash_ptr(key) & (cap - 1);; i = (i + 1) & (cap - 1)) {
        if (table[i].key == key)
            return &table[i];
        if (!table[i].key)
            return 0;
    }
}

static int grow(void)
{
    size_t ncap = cap ? cap * 2 : 1024;
    entry *nt = calloc(ncap, sizeof *nt);
    if (!nt)
        return -1;
    for (size_t i = 0; i < cap; i++) {
        if (table[i].key) {
            size_t k = hash_ptr(table[i].key) & (ncap - 1);
            while (nt[k].key)
                k = (k + 1) & (ncap - 1);
            nt[k] = table[i];
        }
    }
    free(table);
    table = nt;
    cap = ncap;
    return 0;
}

static entry *insert(const void *key)
{
    if ((used + 1) * 2 > cap && grow())
        return 0;
    size_t i = hash_ptr(key) & (cap - 1);
    while (table[i].key && table[i].key != key)
        i = (i + 1) & (cap - 1);
    if (!table[i].key)
        used++;
    return &table[i];
}

/* Remove e and close the gap: a later entry of the same probe run moves back into it unless
 * its home slot lies cyclically in (gap, its slot] (Knuth 6.4, algorithm R). */
static void erase(entry *e)
{
    size_t mask = cap - 1, i = (size_t)(e - table);
    for (size_t j = (i + 1) & mask; table[j].key; j = (j + 1) & mask) {
        size_t home = hash_ptr(table[j].key) & mask;
        if (((j - home) & mask) >= ((j - i) & mask)) {
            table[i] = table[j];
            i = j;
        }
    }
    memset(&table[i], 0, sizeof table[i]);
    used--;
}

static int counts_bytes(int kind) /* adds to live_bytes */
{
    return kind == SOAK_OBJ_BUFFER || kind == SOAK_OBJ_IMAGE || kind == SOAK_OBJ_PIPE || kind == SOAK_OBJ_SVM;
}

static int is_memory(int kind)
{
    return kind == SOAK_OBJ_BUFFER || kind == SOAK_OBJ_SUBBUFFER || kind == SOAK_OBJ_IMAGE ||
           kind == SOAK_OBJ_PIPE || kind == SOAK_OBJ_MEM_OTHER || kind == SOAK_OBJ_SVM;
}

static const char *kind_name(int kind) { return soak_g.kinds[kind].name; }

/* extra description of a new memory object, for its record */
typedef struct {
    uint64_t flags;
    const void *parent;
    uint64_t origin;
    int has_dims;
    uint64_t w, h, d, array;
    uint32_t order, dtype, image_type;
    int shares; /* image from a buffer: no new bytes */
} mem_info;

static void mem_record(soak_call *c, const char *k, int kind, const void *obj, uint64_t bytes, const mem_info *mi)
{
    if (!soak_g.mem_records)
        return;
    char buf[640];
    soak_json j;
    soak_json_begin(&j, buf, sizeof buf, k);
    soak_json_common(&j, c);
    soak_json_str(&j, "kind", kind_name(kind));
    soak_json_ptr(&j, "obj", obj);
    soak_json_uint(&j, "bytes", bytes);
    soak_json_uint(&j, "live_bytes", soak_g.hdr->live_bytes);
    if (mi) {
        soak_json_uint(&j, "flags", mi->flags);
        if (mi->parent)
            soak_json_ptr(&j, "parent", mi->parent);
        if (kind == SOAK_OBJ_SUBBUFFER)
            soak_json_uint(&j, "origin", mi->origin);
        if (mi->has_dims) {
            char dims[160];
            snprintf(dims, sizeof dims, "[%llu,%llu,%llu,%llu]", (unsigned long long)mi->w,
                     (unsigned long long)mi->h, (unsigned long long)mi->d, (unsigned long long)mi->array);
            soak_json_raw(&j, "dims", dims);
            soak_json_uint(&j, "image_type", mi->image_type);
            soak_json_uint(&j, "channel_order", mi->order);
            soak_json_uint(&j, "channel_type", mi->dtype);
        }
    }
    soak_rec_write(buf, soak_json_end(&j), 0);
}

static void obj_add(soak_call *c, int kind, const void *obj, uint64_t bytes, const mem_info *mi)
{
    if (!obj)
        return;
    uint64_t counted = (counts_bytes(kind) && !(mi && mi->shares)) ? bytes : 0;
    pthread_mutex_lock(&lock);
    entry *e = insert(obj);
    if (e && e->key == obj) {
        /* the address came back while we still held it: the old object is gone */
        soak_stats_kind *ok = &soak_g.kinds[e->kind];
        ok->live--;
        ok->live_bytes -= e->bytes;
        ok->released++;
        soak_g.hdr->live_bytes -= e->counted;
        free(e->name);
    }
    if (e) {
        e->name = 0;
        e->key = obj;
        e->kind = (uint32_t)kind;
        e->refs = 1;
        e->bytes = bytes;
        e->counted = counted;
    }
    soak_stats_kind *k = &soak_g.kinds[kind];
    k->live++;
    k->created++;
    k->live_bytes += bytes;
    k->bytes_created += bytes;
    if (k->live > k->peak_live)
        k->peak_live = k->live;
    soak_g.hdr->live_bytes += counted;
    if (soak_g.hdr->live_bytes > soak_g.hdr->peak_live_bytes)
        soak_g.hdr->peak_live_bytes = soak_g.hdr->live_bytes;
    pthread_mutex_unlock(&lock);
    if (is_memory(kind))
        mem_record(c, "alloc", kind, obj, bytes, mi);
}

void soak_obj_new(soak_call *c, int kind, const void *obj, uint64_t bytes) { obj_add(c, kind, obj, bytes, 0); }

void soak_obj_retain(soak_call *c, const void *obj)
{
    (void)c;
    pthread_mutex_lock(&lock);
    entry *e = find(obj);
    if (e)
        e->refs++;
    else
        soak_g.hdr->untracked_releases++;
    pthread_mutex_unlock(&lock);
}

static void obj_drop(soak_call *c, const void *obj, int force)
{
    int kind = -1;
    uint64_t bytes = 0;
    pthread_mutex_lock(&lock);
    entry *e = find(obj);
    if (!e) {
        soak_g.hdr->untracked_releases++;
    } else if (force || --e->refs == 0) {
        kind = (int)e->kind;
        bytes = e->bytes;
        soak_stats_kind *k = &soak_g.kinds[kind];
        k->live--;
        k->live_bytes -= bytes;
        k->released++;
        soak_g.hdr->live_bytes -= e->counted;
        free(e->name);
        erase(e);
    }
    pthread_mutex_unlock(&lock);
    if (kind == SOAK_OBJ_KERNEL) /* profile.c caches kernel names by object */
        __atomic_add_fetch(&soak_prof_kernel_gen, 1, __ATOMIC_RELAXED);
    if (kind >= 0 && is_memory(kind))
        mem_record(c, "free", kind, obj, bytes, 0);
}

void soak_obj_release(soak_call *c, const void *obj) { obj_drop(c, obj, 0); }

void soak_obj_exit_summary(char *buf, size_t cap_)
{
    size_t o = 0;
    o += (size_t)snprintf(buf + o, cap_ - o, "{");
    for (int i = 0; i < SOAK_N_KINDS && o < cap_; i++)
        o += (size_t)snprintf(buf + o, cap_ - o, "%s\"%s\":[%llu,%llu]", i ? "," : "", soak_g.kinds[i].name,
                              (unsigned long long)soak_g.kinds[i].live,
                              (unsigned long long)soak_g.kinds[i].live_bytes);
    if (o < cap_)
        snprintf(buf + o, cap_ - o, "}");
}

/* ---- hooks ---- */

cl_int soak_mem_check(soak_call *c, uint64_t bytes)
{
    if (!soak_g.mem_limit)
        return 0;
    uint64_t live = __atomic_load_n(&soak_g.hdr->live_bytes, __ATOMIC_RELAXED);
    if (live + bytes <= soak_g.mem_limit)
        return 0;
    c->flags |= SOAK_CALL_INJECTED;
    c->why = "mem_limit";
    snprintf(c->detail, sizeof c->detail, "requested=%llu live=%llu limit=%llu", (unsigned long long)bytes,
             (unsigned long long)live, (unsigned long long)soak_g.mem_limit);
    return CL_MEM_OBJECT_ALLOCATION_FAILURE;
}

void soak_buffer_done(soak_call *c, cl_mem r, cl_int code, cl_mem_flags flags, size_t size)
{
    if (r) {
        mem_info mi = {0};
        mi.flags = flags;
        obj_add(c, SOAK_OBJ_BUFFER, r, size, &mi);
    } else if (code) {
        snprintf(c->detail, sizeof c->detail, "size=%llu flags=0x%llx", (unsigned long long)size,
                 (unsigned long long)flags);
    }
}

void soak_subbuffer_done(soak_call *c, cl_mem r, cl_mem parent, cl_mem_flags flags, cl_buffer_create_type type,
                         const void *info)
{
    if (!r)
        return;
    mem_info mi = {0};
    mi.flags = flags;
    mi.parent = parent;
    uint64_t size = 0;
    if (type == CL_BUFFER_CREATE_TYPE_REGION && info) {
        const cl_buffer_region *reg = info;
        size = reg->size;
        mi.origin = reg->origin;
    }
    obj_add(c, SOAK_OBJ_SUBBUFFER, r, size, &mi);
}

static uint64_t channels(cl_channel_order o)
{
    switch (o) {
    case CL_R: case CL_A: case CL_INTENSITY: case CL_LUMINANCE: case CL_Rx:
#ifdef CL_DEPTH
    case CL_DEPTH:
#endif
        return 1;
    case CL_RG: case CL_RA: case CL_RGx:
        return 2;
    case CL_RGB: case CL_RGBx:
        return 3;
    default:
        return 4;
    }
}

static uint64_t element_size(const cl_image_format *f)
{
    if (!f)
        return 0;
    switch (f->image_channel_data_type) {
    case CL_SNORM_INT8: case CL_UNORM_INT8: case CL_SIGNED_INT8: case CL_UNSIGNED_INT8:
        return channels(f->image_channel_order);
    case CL_SNORM_INT16: case CL_UNORM_INT16: case CL_SIGNED_INT16: case CL_UNSIGNED_INT16: case CL_HALF_FLOAT:
        return 2 * channels(f->image_channel_order);
    case CL_UNORM_SHORT_565: case CL_UNORM_SHORT_555:
        return 2;
    case CL_UNORM_INT_101010:
#ifdef CL_UNORM_INT_101010_2
    case CL_UNORM_INT_101010_2:
#endif
        return 4;
    default: /* 32-bit channel types */
        return 4 * channels(f->image_channel_order);
    }
}

void soak_image_done(soak_call *c, cl_mem r, cl_int code, cl_mem_flags flags, const cl_image_format *fmt,
                     const cl_image_desc *desc, size_t w2, size_t h2, size_t d2)
{
    mem_info mi = {0};
    mi.flags = flags;
    mi.has_dims = 1;
    if (fmt) {
        mi.order = fmt->image_channel_order;
        mi.dtype = fmt->image_channel_data_type;
    }
    if (desc) {
        mi.image_type = desc->image_type;
        mi.w = desc->image_width;
        mi.h = desc->image_height ? desc->image_height : 1;
        mi.d = desc->image_depth ? desc->image_depth : 1;
        mi.array = desc->image_array_size ? desc->image_array_size : 1;
        if (desc->image_type == CL_MEM_OBJECT_IMAGE1D_ARRAY)
            mi.h = 1;
        if (desc->image_type != CL_MEM_OBJECT_IMAGE3D)
            mi.d = 1;
        if (desc->image_type != CL_MEM_OBJECT_IMAGE1D_ARRAY && desc->image_type != CL_MEM_OBJECT_IMAGE2D_ARRAY)
            mi.array = 1;
        if (desc->mem_object) {
            mi.parent = desc->mem_object;
            mi.shares = 1;
        }
    } else {
        mi.image_type = d2 ? CL_MEM_OBJECT_IMAGE3D : CL_MEM_OBJECT_IMAGE2D;
        mi.w = w2;
        mi.h = h2;
        mi.d = d2 ? d2 : 1;
        mi.array = 1;
    }
    uint64_t bytes = element_size(fmt) * mi.w * mi.h * mi.d * mi.array;
    if (r) {
        obj_add(c, SOAK_OBJ_IMAGE, r, bytes, &mi);
    } else if (code) {
        snprintf(c->detail, sizeof c->detail, "image %llux%llux%llu[%llu] order=0x%x type=0x%x",
                 (unsigned long long)mi.w, (unsigned long long)mi.h, (unsigned long long)mi.d,
                 (unsigned long long)mi.array, mi.order, mi.dtype);
    }
}

uint64_t soak_image_bytes(const cl_image_format *fmt, const cl_image_desc *desc, size_t w2, size_t h2, size_t d2)
{
    if (desc) {
        if (desc->mem_object)
            return 0;
        uint64_t h = desc->image_height ? desc->image_height : 1, d = desc->image_depth ? desc->image_depth : 1;
        uint64_t a = desc->image_array_size ? desc->image_array_size : 1;
        if (desc->image_type == CL_MEM_OBJECT_IMAGE1D_ARRAY)
            h = 1;
        if (desc->image_type != CL_MEM_OBJECT_IMAGE3D)
            d = 1;
        if (desc->image_type != CL_MEM_OBJECT_IMAGE1D_ARRAY && desc->image_type != CL_MEM_OBJECT_IMAGE2D_ARRAY)
            a = 1;
        return element_size(fmt) * desc->image_width * h * d * a;
    }
    return element_size(fmt) * w2 * (h2 ? h2 : 1) * (d2 ? d2 : 1);
}

void soak_pipe_done(soak_call *c, cl_mem r, cl_mem_flags flags, cl_uint packet, cl_uint max_packets)
{
    if (!r)
        return;
    mem_info mi = {0};
    mi.flags = flags;
    obj_add(c, SOAK_OBJ_PIPE, r, (uint64_t)packet * max_packets, &mi);
}

void soak_svm_done(soak_call *c, void *r, cl_svm_mem_flags flags, size_t size)
{
    if (r) {
        mem_info mi = {0};
        mi.flags = flags;
        obj_add(c, SOAK_OBJ_SVM, r, size, &mi);
    } else if (size) {
        /* clSVMAlloc has no error code: a NULL return is its allocation failure */
        snprintf(c->detail, sizeof c->detail, "NULL return; size=%llu flags=0x%llx", (unsigned long long)size,
                 (unsigned long long)flags);
        soak_record_error(c, CL_MEM_OBJECT_ALLOCATION_FAILURE);
    }
}

void soak_svm_free(soak_call *c, const void *p)
{
    if (p)
        obj_drop(c, p, 1);
}

void soak_svm_enqueue_free(soak_call *c, cl_int code, cl_uint n, void **ptrs, const void *callback)
{
    if (code || callback || !ptrs)
        return; /* with a callback, the application frees (through clSVMFree) */
    for (cl_uint i = 0; i < n; i++)
        soak_svm_free(c, ptrs[i]);
}

void soak_event_done(soak_call *c, cl_int code, cl_event *event)
{
    if (code == CL_SUCCESS && event && *event)
        obj_add(c, SOAK_OBJ_EVENT, *event, 0, 0);
}

typedef cl_int(CL_API_CALL *pfn_info)(const void *, cl_uint, size_t, void *, size_t *);
typedef cl_int(CL_API_CALL *pfn_build_info)(cl_program, cl_device_id, cl_program_build_info, size_t, void *,
                                            size_t *);

void soak_kernels_done(soak_call *c, cl_int code, cl_program program, cl_uint num, cl_kernel *kernels)
{
    if (code || !kernels)
        return;
    cl_uint n = 0;
    pfn_info info = (pfn_info)soak_g.real[SOAK_ID_clGetProgramInfo];
    size_t nk = 0;
    if (info && info(program, CL_PROGRAM_NUM_KERNELS, sizeof nk, &nk, 0) == CL_SUCCESS)
        n = (cl_uint)nk;
    if (n > num)
        n = num;
    for (cl_uint i = 0; i < n; i++)
        obj_add(c, SOAK_OBJ_KERNEL, kernels[i], 0, 0);
}

/* The kernel's function name, asked of the driver once per kernel object and cached
 * with it (the error path of a persistent failure asks for it on every call). */
void soak_kernel_name(const void *kernel, char *out, size_t cap)
{
    pthread_mutex_lock(&lock);
    entry *e = find(kernel);
    if (e && e->name) {
        snprintf(out, cap, "%s", e->name);
        pthread_mutex_unlock(&lock);
        return;
    }
    pthread_mutex_unlock(&lock);
    char name[96] = "?";
    pfn_info info = (pfn_info)soak_g.real[SOAK_ID_clGetKernelInfo];
    if (!info || info(kernel, CL_KERNEL_FUNCTION_NAME, sizeof name - 1, name, 0) != CL_SUCCESS)
        snprintf(name, sizeof name, "?");
    name[sizeof name - 1] = 0;
    snprintf(out, cap, "%s", name);
    if (name[0] == '?')
        return;
    pthread_mutex_lock(&lock);
    e = find(kernel);
    if (e && !e->name && e->kind == SOAK_OBJ_KERNEL)
        e->name = strdup(name);
    pthread_mutex_unlock(&lock);
}

void soak_kernel_fields(soak_call *c, cl_kernel kernel, cl_uint dim, const size_t *gws, const size_t *lws)
{
    if (!kernel)
        return;
    soak_kernel_name(kernel, c->kernel, sizeof c->kernel);
    c->dim = 0;
    c->has_lws = 0;
    memset(c->gws, 0, sizeof c->gws);
    memset(c->lws, 0, sizeof c->lws);
    if (gws && dim >= 1 && dim <= 3) {
        c->dim = dim;
        c->has_lws = lws != 0;
        for (cl_uint i = 0; i < dim; i++) {
            c->gws[i] = gws[i];
            c->lws[i] = lws ? lws[i] : 0;
        }
    }
}

void soak_kernel_error_detail(soak_call *c, cl_int code, cl_kernel kernel, cl_uint dim, const size_t *gws,
                              const size_t *lws)
{
    if (!code || !kernel)
        return;
    soak_kernel_fields(c, kernel, dim, gws, lws);
    size_t o = (size_t)snprintf(c->detail, sizeof c->detail, "kernel=%s", c->kernel);
    for (int which = 0; which < 2 && o < sizeof c->detail; which++) {
        const size_t *v = which ? lws : gws;
        if (!v || dim == 0 || dim > 3)
            continue;
        o += (size_t)snprintf(c->detail + o, sizeof c->detail - o, " %s=", which ? "lws" : "gws");
        for (cl_uint i = 0; i < dim && o < sizeof c->detail; i++)
            o += (size_t)snprintf(c->detail + o, sizeof c->detail - o, "%s%llu", i ? "x" : "",
                                  (unsigned long long)v[i]);
    }
}

/* Build failures: one "build" record per device whose build status is an error, with its log. */
void soak_build_failed(soak_call *c, cl_int code, cl_program program, const char *options)
{
    if (!code || !program)
        return;
    pfn_info info = (pfn_info)soak_g.real[SOAK_ID_clGetProgramInfo];
    pfn_build_info binfo = (pfn_build_info)soak_g.real[SOAK_ID_clGetProgramBuildInfo];
    pfn_info dinfo = (pfn_info)soak_g.real[SOAK_ID_clGetDeviceInfo];
    if (!info || !binfo)
        return;
    cl_uint ndev = 0;
    if (info(program, CL_PROGRAM_NUM_DEVICES, sizeof ndev, &ndev, 0) != CL_SUCCESS || !ndev || ndev > 64)
        return;
    cl_device_id devs[64];
    if (info(program, CL_PROGRAM_DEVICES, sizeof(cl_device_id) * ndev, devs, 0) != CL_SUCCESS)
        return;
    for (cl_uint i = 0; i < ndev; i++) {
        cl_build_status st = CL_BUILD_NONE;
        binfo(program, devs[i], CL_PROGRAM_BUILD_STATUS, sizeof st, &st, 0);
        if (st != CL_BUILD_ERROR && ndev > 1)
            continue;
        size_t len = 0;
        binfo(program, devs[i], CL_PROGRAM_BUILD_LOG, 0, 0, &len);
        const size_t max_log = 64 * 1024;
        size_t keep = len < max_log ? len : max_log;
        char *log = malloc(keep + 1);
        char *buf = malloc(keep * 6 + 2048);
        if (!log || !buf) {
            free(log);
            free(buf);
            return;
        }
        log[0] = 0;
        if (len) {
            char *full = len > max_log ? malloc(len + 1) : log;
            if (full && binfo(program, devs[i], CL_PROGRAM_BUILD_LOG, len, full, 0) == CL_SUCCESS) {
                full[len] = 0;
                if (full != log)
                    memcpy(log, full, keep);
                log[keep] = 0;
            }
            if (full && full != log)
                free(full);
        }
        char dname[128] = "";
        if (dinfo)
            dinfo(devs[i], CL_DEVICE_NAME, sizeof dname - 1, dname, 0);
        dname[sizeof dname - 1] = 0;
        soak_json j;
        soak_json_begin(&j, buf, keep * 6 + 2048, "build_failure");
        soak_json_common(&j, c);
        soak_json_int(&j, "code", code);
        const char *cn = soak_code_to_name(code);
        soak_json_str(&j, "code_name", cn ? cn : "CL_UNKNOWN");
        soak_json_ptr(&j, "program", program);
        soak_json_uint(&j, "device_index", i);
        soak_json_str(&j, "device", dname);
        soak_json_int(&j, "status", st);
        soak_json_str(&j, "options", options ? options : "");
        soak_json_bool(&j, "log_truncated", len > max_log);
        soak_json_str(&j, "log", log);
        soak_rec_write(buf, soak_json_end(&j), 1);
        free(log);
        free(buf);
    }
}

/* ---- device-type override ---- */

#define OVERRIDABLE (CL_DEVICE_TYPE_CPU | CL_DEVICE_TYPE_ACCELERATOR | CL_DEVICE_TYPE_CUSTOM)

cl_device_type soak_query_type(cl_device_type t)
{
    if (soak_g.gpu_override && t != CL_DEVICE_TYPE_ALL && (t & CL_DEVICE_TYPE_GPU))
        return t | OVERRIDABLE;
    return t;
}

void soak_device_info_done(cl_int code, cl_device_info param, size_t size, void *value)
{
    if (!soak_g.gpu_override || code || param != CL_DEVICE_TYPE || !value || size < sizeof(cl_device_type))
        return;
    cl_device_type t;
    memcpy(&t, value, sizeof t);
    if (t & OVERRIDABLE) {
        t = (t & ~(cl_device_type)OVERRIDABLE) | CL_DEVICE_TYPE_GPU;
        memcpy(value, &t, sizeof t);
    }
}

/*
 * The test engine's optional OpenCL path (config "opencl": true, backend opencl).
 *
 * It loads OpenCL the way MNN does (dlopen of the bare name "libOpenCL.so",
 * RTLD_LOCAL, symbols by dlsym on that handle), accepts only GPU devices
 * (otherwise MNN's silent CPU fallback line), and per call allocates a
 * KV-cache-like buffer that grows with the conversation, writes it and
 * waits.  Failures print MNN's own lines.  So a soak through soak's
 * interposer sees real CL calls, live GPU bytes and injected errors.
 */
#define _POSIX_C_SOURCE 200809L
#include "opencl_path.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int32_t cl_int;
typedef uint32_t cl_uint;
typedef uint64_t cl_ulong;
#define CL_DEVICE_TYPE_GPU (1u << 2)
#define CL_MEM_READ_WRITE (1u << 0)

typedef cl_int (*GetPlatformIDs)(cl_uint, void **, cl_uint *);
typedef cl_int (*GetDeviceIDs)(void *, cl_ulong, cl_uint, void **, cl_uint *);
typedef void *(*CreateContext)(const intptr_t *, cl_uint, void *const *, void *, void *, cl_int *);
typedef void *(*CreateCommandQueue)(void *, void *, cl_ulong, cl_int *);
typedef void *(*CreateBuffer)(void *, cl_ulong, size_t, void *, cl_int *);
typedef cl_int (*EnqueueWriteBuffer)(void *, void *, cl_uint, size_t, size_t, const void *, cl_uint,
                                     const void *, void *);
typedef cl_int (*Finish)(void *);
typedef cl_int (*GetDeviceInfo)(void *, cl_uint, size_t, void *, size_t *);
typedef cl_int (*Release)(void *);

struct cl_path {
    void *lib;
    GetPlatformIDs get_platforms;
    GetDeviceIDs get_devices;
    CreateContext create_context;
    CreateCommandQueue create_queue;
    CreateBuffer create_buffer;
    EnqueueWriteBuffer write_buffer;
    Finish finish;
    GetDeviceInfo device_info;
    Release release_mem, release_queue, release_context;
    void *context, *queue;
    void *kv;           /* grows with the conversation, like MNN's KV cache */
    void *weights;      /* uploaded at load; NULL when that allocation failed */
    size_t kv_bytes;
    void **leaked;
    size_t n_leaked;
};

#define LOAD(field, name, type) \
    if (!(p->field = (type)dlsym(p->lib, name))) { missing = name; }

/* MNN's init probes of the device (OpenCLRuntime.cpp): name, vendor, version,
 * then optional features.  A vendor's driver refuses some of the optional ones
 * with CL_INVALID_VALUE (-30) on every clean run: measured on NVIDIA (three
 * params).  To mimic a vendor on any driver, its refused params are asked with
 * a zero-size buffer, which every conformant driver answers with -30; MNN
 * ignores the answer and prints nothing. */
typedef struct { const char *vendor; cl_uint params[4]; } vendor_probes;
static const vendor_probes REFUSED[] = {
    /* CL_DEVICE_HALF_FP_CONFIG (no cl_khr_fp16), CL_DEVICE_RECORDABLE_QUEUE_MAX_SIZE (QCOM),
     * CL_DEVICE_NUM_THREADS_PER_EU_INTEL */
    {"nvidia", {0x1033, 0x41DE, 0x4314, 0}},
};

static void probe_device(cl_path *p, void *device, const char *vendor) {
    char buf[256];
    static const cl_uint ORDINARY[] = {0x102B /* NAME */, 0x102C /* VENDOR */, 0x102F /* VERSION */};
    for (size_t i = 0; i < sizeof(ORDINARY) / sizeof(ORDINARY[0]); i++)
        p->device_info(device, ORDINARY[i], sizeof(buf), buf, NULL);
    if (!vendor) return;
    for (size_t v = 0; v < sizeof(REFUSED) / sizeof(REFUSED[0]); v++) {
        if (strcmp(REFUSED[v].vendor, vendor) != 0) continue;
        for (const cl_uint *q = REFUSED[v].params; *q; q++) p->device_info(device, *q, 0, buf, NULL);
    }
}

cl_path *cl_path_open(int *fell_back, const char *vendor) {
    *fell_back = 0;
    cl_path *p = calloc(1, sizeof(*p));
    p->lib = dlopen("libOpenCL.so", RTLD_NOW | RTLD_LOCAL);
    if (!p->lib) {
        printf("OpenCL init error, fallback ... \n");
        printf("Can't Find type=3 backend, use 0 instead\n");
        free(p);
        *fell_back = 1;
        return NULL;
    }
    const char *missing = NULL;
    LOAD(get_platforms, "clGetPlatformIDs", GetPlatformIDs);
    LOAD(get_devices, "clGetDeviceIDs", GetDeviceIDs);
    LOAD(create_context, "clCreateContext", CreateContext);
    LOAD(create_queue, "clCreateCommandQueue", CreateCommandQueue);
    LOAD(create_buffer, "clCreateBuffer", CreateBuffer);
    LOAD(write_buffer, "clEnqueueWriteBuffer", EnqueueWriteBuffer);
    LOAD(finish, "clFinish", Finish);
    LOAD(device_info, "clGetDeviceInfo", GetDeviceInfo);
    LOAD(release_mem, "clReleaseMemObject", Release);
    LOAD(release_queue, "clReleaseCommandQueue", Release);
    LOAD(release_context, "clReleaseContext", Release);
    if (missing) {
        printf("Parsing OpenCL symbols error !!! \n");
        printf("Can't Find type=3 backend, use 0 instead\n");
        dlclose(p->lib);
        free(p);
        *fell_back = 1;
        return NULL;
    }
    void *platforms[8];
    cl_uint n_platforms = 0;
    cl_int err = p->get_platforms(8, platforms, &n_platforms);
    void *device = NULL;
    if (err != 0) {
        printf("CL ERROR CODE : %d, info:getPlatform \n", err);
    } else {
        for (cl_uint i = 0; i < n_platforms && !device; i++) {
            cl_uint n = 0;
            /* MNN asks for GPU devices only; no log line when there are none */
            if (p->get_devices(platforms[i], CL_DEVICE_TYPE_GPU, 1, &device, &n) != 0 || n == 0) device = NULL;
        }
    }
    if (device) probe_device(p, device, vendor);
    if (device) {
        p->context = p->create_context(NULL, 1, &device, NULL, NULL, &err);
        if (!p->context || err) printf("CL ERROR CODE : %d, info:context \n", err);
    }
    if (p->context) {
        p->queue = p->create_queue(p->context, device, 0, &err);
        if (!p->queue || err) printf("CL ERROR CODE : %d, info:commandQueue \n", err);
    }
    if (!p->queue) {
        printf("Can't Find type=3 backend, use 0 instead\n");
        cl_path_close(p);
        *fell_back = 1;
        return NULL;
    }
    return p;
}

/* One inference step: grow the KV buffer to the history, write it, wait.
 * Returns 0, or -1 when an allocation failed (MNN: internal error). */
int cl_path_step(cl_path *p, long history_tokens, size_t leak_bytes) {
    size_t want = (size_t)(1 + history_tokens / 64) * 64 * 1024; /* 64-token chunks, 1 KiB/token */
    cl_int err = 0;
    if (want > p->kv_bytes) {
        void *grown = p->create_buffer(p->context, CL_MEM_READ_WRITE, want, NULL, &err);
        if (!grown || err) {
            printf("Alloc Buffer %lu error, code:%d \n", (unsigned long)want, err);
            printf("Map error key_ptr == nullptr \n");
            return -1;
        }
        if (p->kv) p->release_mem(p->kv);
        p->kv = grown;
        p->kv_bytes = want;
    }
    static char data[4096];
    err = p->write_buffer(p->queue, p->kv, 1, 0, sizeof(data), data, 0, NULL, NULL);
    if (err) printf("OpenCL enqueue write error:%d\n", err); /* MNN logs and goes on */
    err = p->finish(p->queue);
    if (err) printf("CL ERROR CODE : %d, info:run3d \n", err);
    if (leak_bytes) {
        void *leak = p->create_buffer(p->context, CL_MEM_READ_WRITE, leak_bytes, NULL, &err);
        if (leak) {
            p->leaked = realloc(p->leaked, (p->n_leaked + 1) * sizeof(void *));
            p->leaked[p->n_leaked++] = leak;
        }
    }
    return 0;
}

int cl_path_weights(cl_path *p) {
    cl_int err = 0;
    size_t bytes = 256 * 1024;
    if (p->weights) return 0;
    p->weights = p->create_buffer(p->context, CL_MEM_READ_WRITE, bytes, NULL, &err);
    if (!p->weights || err) {
        /* MNN logs the failed upload and goes on with the null buffer */
        printf("Alloc Buffer %lu error, code:%d \n", (unsigned long)bytes, err);
        p->weights = NULL;
        return -1;
    }
    return 0;
}

int cl_path_use_weights(cl_path *p) {
    static char data[64];
    /* a real call on the (possibly null) buffer: the driver says what is wrong */
    return p->write_buffer(p->queue, p->weights, 1, 0, sizeof(data), data, 0, NULL, NULL);
}

void cl_path_reset(cl_path *p) {
    if (p && p->kv) {
        p->release_mem(p->kv);
        p->kv = NULL;
        p->kv_bytes = 0;
    }
}

void cl_path_close(cl_path *p) {
    if (!p) return;
    cl_path_reset(p);
    for (size_t i = 0; i < p->n_leaked; i++) p->release_mem(p->leaked[i]);
    if (p->weights) p->release_mem(p->weights);
    free(p->leaked);
    if (p->queue) p->release_queue(p->queue);
    if (p->context) p->release_context(p->context);
    if (p->lib) dlclose(p->lib);
    free(p);
}

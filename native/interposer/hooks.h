/* Hand-written hooks for the generated wrappers.
 *
 * For an entry point X the generated wrapper calls, when defined:
 *   SOAK_PRE_X(c, <X's parameters>)               before the real call; an expression whose
 *                                                 non-zero value is an error code to inject
 *                                                 (it may also rewrite parameters)
 *   SOAK_POST_X(c, [result,] code, <parameters>)  after the real call, instead of the
 *                                                 generic tracking (new object / retain /
 *                                                 release / event out-parameter)
 *   SOAK_INJECTED_X(c, code, <parameters>)        when soak fails the call without calling
 *                                                 the driver
 * c is the soak_call, code the call's error (return value or errcode_ret).
 */
#ifndef SOAK_HOOKS_H
#define SOAK_HOOKS_H

#include "soak_interposer.h"

SOAK_HIDDEN cl_int soak_mem_check(soak_call *c, uint64_t bytes);
SOAK_HIDDEN uint64_t soak_image_bytes(const cl_image_format *fmt, const cl_image_desc *desc, size_t w2, size_t h2,
                                      size_t d2);
SOAK_HIDDEN void soak_buffer_done(soak_call *c, cl_mem r, cl_int code, cl_mem_flags flags, size_t size);
SOAK_HIDDEN void soak_subbuffer_done(soak_call *c, cl_mem r, cl_mem parent, cl_mem_flags flags,
                                     cl_buffer_create_type type, const void *info);
SOAK_HIDDEN void soak_image_done(soak_call *c, cl_mem r, cl_int code, cl_mem_flags flags,
                                 const cl_image_format *fmt, const cl_image_desc *desc, size_t w2, size_t h2,
                                 size_t d2);
SOAK_HIDDEN void soak_pipe_done(soak_call *c, cl_mem r, cl_mem_flags flags, cl_uint packet, cl_uint max_packets);
SOAK_HIDDEN void soak_svm_done(soak_call *c, void *r, cl_svm_mem_flags flags, size_t size);
SOAK_HIDDEN void soak_svm_free(soak_call *c, const void *p);
SOAK_HIDDEN void soak_svm_enqueue_free(soak_call *c, cl_int code, cl_uint n, void **ptrs, const void *callback);
SOAK_HIDDEN void soak_event_done(soak_call *c, cl_int code, cl_event *event);
SOAK_HIDDEN void soak_kernels_done(soak_call *c, cl_int code, cl_program program, cl_uint num, cl_kernel *kernels);
SOAK_HIDDEN void soak_kernel_fields(soak_call *c, cl_kernel kernel, cl_uint dim, const size_t *gws,
                                    const size_t *lws);
SOAK_HIDDEN void soak_kernel_error_detail(soak_call *c, cl_int code, cl_kernel kernel, cl_uint dim,
                                          const size_t *gws, const size_t *lws);
SOAK_HIDDEN void soak_build_failed(soak_call *c, cl_int code, cl_program program, const char *options);
SOAK_HIDDEN cl_device_type soak_query_type(cl_device_type t);
SOAK_HIDDEN void soak_device_info_done(cl_int code, cl_device_info param, size_t size, void *value);

/* ---- memory objects: memory limit before, size/flags/dims after ---- */
#define SOAK_PRE_clCreateBuffer(c, ctx, flags, size, host, err) soak_mem_check(c, size)
#define SOAK_POST_clCreateBuffer(c, r, code, ctx, flags, size, host, err) soak_buffer_done(c, r, code, flags, size)
#define SOAK_PRE_clCreateBufferWithProperties(c, ctx, props, flags, size, host, err) soak_mem_check(c, size)
#define SOAK_POST_clCreateBufferWithProperties(c, r, code, ctx, props, flags, size, host, err) \
    soak_buffer_done(c, r, code, flags, size)
#define SOAK_POST_clCreateSubBuffer(c, r, code, buf, flags, type, info, err) \
    soak_subbuffer_done(c, r, buf, flags, type, info)

#define SOAK_PRE_clCreateImage(c, ctx, flags, fmt, desc, host, err) \
    soak_mem_check(c, soak_image_bytes(fmt, desc, 0, 0, 0))
#define SOAK_POST_clCreateImage(c, r, code, ctx, flags, fmt, desc, host, err) \
    soak_image_done(c, r, code, flags, fmt, desc, 0, 0, 0)
#define SOAK_PRE_clCreateImageWithProperties(c, ctx, props, flags, fmt, desc, host, err) \
    soak_mem_check(c, soak_image_bytes(fmt, desc, 0, 0, 0))
#define SOAK_POST_clCreateImageWithProperties(c, r, code, ctx, props, flags, fmt, desc, host, err) \
    soak_image_done(c, r, code, flags, fmt, desc, 0, 0, 0)
#define SOAK_PRE_clCreateImage2D(c, ctx, flags, fmt, w, h, pitch, host, err) \
    soak_mem_check(c, soak_image_bytes(fmt, 0, w, h, 0))
#define SOAK_POST_clCreateImage2D(c, r, code, ctx, flags, fmt, w, h, pitch, host, err) \
    soak_image_done(c, r, code, flags, fmt, 0, w, h, 0)
#define SOAK_PRE_clCreateImage3D(c, ctx, flags, fmt, w, h, d, rp, sp, host, err) \
    soak_mem_check(c, soak_image_bytes(fmt, 0, w, h, d))
#define SOAK_POST_clCreateImage3D(c, r, code, ctx, flags, fmt, w, h, d, rp, sp, host, err) \
    soak_image_done(c, r, code, flags, fmt, 0, w, h, d)

#define SOAK_PRE_clCreatePipe(c, ctx, flags, packet, max, props, err) \
    soak_mem_check(c, (uint64_t)(packet) * (max))
#define SOAK_POST_clCreatePipe(c, r, code, ctx, flags, packet, max, props, err) \
    soak_pipe_done(c, r, flags, packet, max)

#define SOAK_PRE_clSVMAlloc(c, ctx, flags, size, align) soak_mem_check(c, size)
#define SOAK_POST_clSVMAlloc(c, r, code, ctx, flags, size, align) soak_svm_done(c, r, flags, size)
#define SOAK_POST_clSVMFree(c, code, ctx, ptr) soak_svm_free(c, ptr)
#define SOAK_POST_clEnqueueSVMFree(c, r, code, q, n, ptrs, pfn, ud, nw, wl, ev) \
    (soak_svm_enqueue_free(c, code, n, ptrs, (const void *)(pfn)), soak_event_done(c, code, ev))
#define SOAK_PRE_clSVMAllocARM(c, ctx, flags, size, align) soak_mem_check(c, size)
#define SOAK_POST_clSVMAllocARM(c, r, code, ctx, flags, size, align) soak_svm_done(c, r, flags, size)
#define SOAK_POST_clSVMFreeARM(c, code, ctx, ptr) soak_svm_free(c, ptr)
#define SOAK_POST_clEnqueueSVMFreeARM(c, r, code, q, n, ptrs, pfn, ud, nw, wl, ev) \
    (soak_svm_enqueue_free(c, code, n, ptrs, (const void *)(pfn)), soak_event_done(c, code, ev))

/* ---- programs and kernels ---- */
#define SOAK_POST_clCreateKernelsInProgram(c, r, code, prog, num, kernels, num_ret) \
    soak_kernels_done(c, code, prog, num, kernels)
#define SOAK_POST_clBuildProgram(c, r, code, prog, ndev, devs, options, pfn, ud) \
    soak_build_failed(c, code, prog, options)
#define SOAK_POST_clCompileProgram(c, r, code, prog, ndev, devs, options, nh, hs, hn, pfn, ud) \
    soak_build_failed(c, code, prog, options)
#define SOAK_POST_clLinkProgram(c, r, code, ctx, ndev, devs, options, np, progs, pfn, ud, err) \
    do {                                                                                     \
        if (r)                                                                               \
            soak_obj_new(c, SOAK_OBJ_PROGRAM, r, 0);                                         \
        soak_build_failed(c, code, r, options);                                              \
    } while (0)
#define SOAK_POST_clEnqueueNDRangeKernel(c, r, code, q, k, dim, off, gws, lws, nw, wl, ev) \
    (soak_kernel_error_detail(c, code, k, dim, gws, lws), soak_event_done(c, code, ev))

/* SOAK_INJECTED_X(c, code, <parameters>): runs when soak fails the call itself (fault rule or
 * memory limit) instead of calling the driver; adds detail to the error record */
#define SOAK_INJECTED_clEnqueueNDRangeKernel(c, code, q, k, dim, off, gws, lws, nw, wl, ev) \
    soak_kernel_error_detail(c, code, k, dim, gws, lws)

/* ---- silent faults (silent.c): skip a launch, corrupt a write/copy's destination ----
 *   SOAK_SKIP_X(c, <parameters>)     a skip rule fired: returns the call's result (CL_SUCCESS) without the driver
 *   SOAK_CORRUPT_X(c, <parameters>)  a corrupt rule fired and the call succeeded: perturb its destination */
SOAK_HIDDEN cl_int soak_skip_kernel(soak_call *c, cl_command_queue q, cl_kernel k, cl_uint dim, const size_t *gws,
                                    const size_t *lws, cl_uint nw, const cl_event *wl, cl_event *ev);
SOAK_HIDDEN void soak_corrupt_buffer(soak_call *c, cl_command_queue q, cl_mem mem, size_t offset, size_t size);
SOAK_HIDDEN void soak_corrupt_image(soak_call *c, cl_command_queue q, cl_mem image, const size_t *origin,
                                    const size_t *region);
SOAK_HIDDEN void soak_corrupt_unmapped(soak_call *c, cl_command_queue q, cl_mem mem, const void *ptr);
SOAK_HIDDEN void soak_map_note(cl_mem mem, const void *ptr, int image, size_t offset, size_t size,
                               const size_t *origin, const size_t *region);
SOAK_HIDDEN void soak_map_take(soak_call *c, cl_mem mem, const void *ptr);
SOAK_HIDDEN extern int soak_map_tracking;

#define SOAK_SKIP_clEnqueueNDRangeKernel(c, q, k, dim, off, gws, lws, nw, wl, ev) \
    soak_skip_kernel(c, q, k, dim, gws, lws, nw, wl, ev)
#define SOAK_CORRUPT_clEnqueueWriteBuffer(c, q, buf, blocking, off, size, ptr, nw, wl, ev) \
    soak_corrupt_buffer(c, q, buf, off, size)
#define SOAK_CORRUPT_clEnqueueCopyBuffer(c, q, src, dst, soff, doff, size, nw, wl, ev) \
    soak_corrupt_buffer(c, q, dst, doff, size)
#define SOAK_CORRUPT_clEnqueueWriteImage(c, q, img, blocking, origin, region, rp, sp, ptr, nw, wl, ev) \
    soak_corrupt_image(c, q, img, origin, region)
#define SOAK_CORRUPT_clEnqueueCopyImage(c, q, src, dst, sorigin, dorigin, region, nw, wl, ev) \
    soak_corrupt_image(c, q, dst, dorigin, region)
#define SOAK_CORRUPT_clEnqueueUnmapMemObject(c, q, mem, ptr, nw, wl, ev) soak_corrupt_unmapped(c, q, mem, ptr)
/* a corrupt rule on unmap needs the mapped region: maps are remembered while one exists */
#define SOAK_POST_clEnqueueMapBuffer(c, r, code, q, buf, blocking, flags, off, size, nw, wl, ev, err) \
    ((soak_map_tracking && r) ? soak_map_note(buf, r, 0, off, size, 0, 0) : (void)0, soak_event_done(c, code, ev))
#define SOAK_POST_clEnqueueMapImage(c, r, code, q, img, blocking, flags, origin, region, rp, sp, nw, wl, ev, err) \
    ((soak_map_tracking && r) ? soak_map_note(img, r, 1, 0, 0, origin, region) : (void)0,              \
     soak_event_done(c, code, ev))
#define SOAK_PRE_clEnqueueUnmapMemObject(c, q, mem, ptr, nw, wl, ev) \
    (soak_map_tracking ? soak_map_take(c, mem, ptr) : (void)0, 0)

/* ---- profiling (SOAK_CL_PROFILE): timed commands' queues profile; finishing calls read completed events ---- */
#define SOAK_PRE_clCreateCommandQueue(c, ctx, dev, props, err) \
    ((props) |= soak_g.profile && !soak_twin_on ? CL_QUEUE_PROFILING_ENABLE : 0, 0)
#define SOAK_PRE_clCreateCommandQueueWithProperties(c, ctx, dev, props, err) \
    ((props) = soak_profile_props(props), 0)
#define SOAK_PRE_clCreateCommandQueueWithPropertiesKHR(c, ctx, dev, props, err) \
    ((props) = (const cl_queue_properties_khr *)soak_profile_props((const cl_queue_properties *)(props)), 0)
/* twin queues (twin.c): the engine's queues stay unprofiled; a twin goes with its queue's last reference */
#define SOAK_PRE_clReleaseCommandQueue(c, q) (soak_g.profile && soak_twin_on ? soak_twin_forget(q) : (void)0, 0)
#define SOAK_POST_clFinish(c, r, code, q) (soak_g.profile ? soak_prof_sync() : (void)0)
#define SOAK_POST_clWaitForEvents(c, r, code, n, evs) (soak_g.profile ? soak_prof_sync() : (void)0)

/* ---- device-type override ---- */
#define SOAK_PRE_clGetDeviceIDs(c, platform, type, n, devs, nret) ((type) = soak_query_type(type), 0)
#define SOAK_PRE_clCreateContextFromType(c, props, type, pfn, ud, err) ((type) = soak_query_type(type), 0)
#define SOAK_POST_clGetDeviceInfo(c, r, code, dev, param, size, value, size_ret) \
    soak_device_info_done(code, param, size, value)

#endif

/* A do-nothing OpenCL "driver" for measuring the interposer alone: every launch succeeds at
 * once, each event is a new address and complete when asked.  Not a conformant library: only
 * the entry points launch_loop.c and the interposer's launch path (profiling included) call.
 * Built by tests and benchmarks with `cc -shared -fPIC` (no CMake). */
#define CL_TARGET_OPENCL_VERSION 300
#include <CL/cl.h>
#include <stdint.h>
#include <string.h>

static uintptr_t next_event = 0x100000;
static cl_ulong device_ns = 1000;

cl_int clEnqueueNDRangeKernel(cl_command_queue q, cl_kernel k, cl_uint dim, const size_t *off, const size_t *gws,
                              const size_t *lws, cl_uint nwait, const cl_event *wait, cl_event *event)
{
    if (event) { /* a new address each time, as a driver that never reuses one would give */
        *event = (cl_event)next_event;
        next_event += 64;
    }
    return CL_SUCCESS;
}

cl_int clGetKernelInfo(cl_kernel k, cl_kernel_info param, size_t size, void *value, size_t *size_ret)
{
    char name[16] = "kernel_";
    name[7] = (char)('a' + ((uintptr_t)k >> 4) % 26);
    if (value && size > 8)
        memcpy(value, name, 9);
    if (size_ret)
        *size_ret = 9;
    return CL_SUCCESS;
}

cl_int clGetEventInfo(cl_event e, cl_event_info param, size_t size, void *value, size_t *size_ret)
{
    if (value && size >= sizeof(cl_int))
        *(cl_int *)value = CL_COMPLETE;
    if (size_ret)
        *size_ret = sizeof(cl_int);
    return CL_SUCCESS;
}

cl_int clGetEventProfilingInfo(cl_event e, cl_profiling_info param, size_t size, void *value, size_t *size_ret)
{
    if (value && size >= sizeof(cl_ulong))
        *(cl_ulong *)value = (device_ns += 500);
    if (size_ret)
        *size_ret = sizeof(cl_ulong);
    return CL_SUCCESS;
}

cl_int clRetainEvent(cl_event e) { return CL_SUCCESS; }
cl_int clReleaseEvent(cl_event e) { return CL_SUCCESS; }
cl_int clFinish(cl_command_queue q) { return CL_SUCCESS; }

#ifndef SOAK_TE_OPENCL_PATH_H
#define SOAK_TE_OPENCL_PATH_H
#include <stddef.h>
#include <stdint.h>

typedef struct cl_path cl_path;

/* NULL when OpenCL can't run (then *fell_back is 1 and MNN's lines were printed). */
/* vendor: NULL, or a vendor whose init probe errors to mimic ("nvidia"). */
cl_path *cl_path_open(int *fell_back, const char *vendor);
/* Allocate the weight buffer (MNN's upload at load); -1 (line printed) when it failed. */
int cl_path_weights(cl_path *p);
/* One op reading the weight buffer; returns its CL error code (0 when fine). */
int cl_path_use_weights(cl_path *p);
int cl_path_step(cl_path *p, long history_tokens, size_t leak_bytes);
void cl_path_reset(cl_path *p);
void cl_path_close(cl_path *p);

#endif

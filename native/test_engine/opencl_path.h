#ifndef SOAK_TE_OPENCL_PATH_H
#define SOAK_TE_OPENCL_PATH_H
#include <stddef.h>
#include <stdint.h>

typedef struct cl_path cl_path;

/* NULL when OpenCL can't run (then *fell_back is 1 and MNN's lines were printed). */
cl_path *cl_path_open(int *fell_back);
int cl_path_step(cl_path *p, long history_tokens, size_t leak_bytes);
void cl_path_reset(cl_path *p);
void cl_path_close(cl_path *p);

#endif

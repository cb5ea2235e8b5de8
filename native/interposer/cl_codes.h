/* OpenCL error code names.  The table is generated at build time (gen_wrappers.py ->
 * generated/cl_codes.c) from cl_error_codes.tsv, the one table of CL error names,
 * which soak.cl_codes reads too.  Standard C only, so a test can compile it alone. */
#ifndef SOAK_CL_CODES_H
#define SOAK_CL_CODES_H

typedef struct {
    int code;
    const char *name;
} soak_code_name;

/* every error code (< 0) of cl_error_codes.tsv, in its order; ends with {0, 0} */
extern __attribute__((visibility("hidden"))) const soak_code_name soak_code_names[];

#endif

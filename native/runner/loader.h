/* Loads backend plugins and an engine library, and checks its ABI. */
#ifndef SOAK_RUNNER_LOADER_H
#define SOAK_RUNNER_LOADER_H

#include <stddef.h>

#include "soak_engine.h"

typedef struct {
    uint32_t (*abi_version)(void);
    const char *(*name)(void);
    soak_engine *(*create)(const char *config_path, char *err, size_t err_len);
    int (*set_config)(soak_engine *e, const char *json);
    int (*load)(soak_engine *e);
    int (*respond)(soak_engine *e, const char *prompt, size_t prompt_len, int32_t max_new_tokens,
                   soak_text_cb cb, void *user);
    int (*reset)(soak_engine *e);
    int (*reinit)(soak_engine *e);
    int (*status)(soak_engine *e);
    int (*perf)(soak_engine *e, soak_perf *out);
    void (*destroy)(soak_engine *e);
} engine_api;

/* error_kind strings of the worker protocol (NULL = no error). */
extern const char *const ERR_MISSING_LIBRARY;
extern const char *const ERR_MISSING_SYMBOL;
extern const char *const ERR_WRONG_ARCH;
extern const char *const ERR_ABI_MISMATCH;

/* dlopen(path, RTLD_NOW | RTLD_GLOBAL).  Returns NULL on success, else the
 * error_kind, with the message in err and the fix (or NULL) in *hint.
 * Handles are never closed (as ctypes). */
const char *load_plugin(const char *path, char *err, size_t err_len, const char **hint);

/* dlopen(path, RTLD_NOW | RTLD_LOCAL) + dlsym of every required ABI function + version check
 * (SOAK_ENGINE_ABI_MIN_VERSION to SOAK_ENGINE_ABI_VERSION). */
const char *load_engine(const char *path, engine_api *api, char *err, size_t err_len, const char **hint);

#endif

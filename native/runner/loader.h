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
    /* optional (ABI 2, the logits oracle): all four set, or all NULL with the reason in oracle_unavailable */
    int (*tokenize)(soak_engine *e, const char *prompt, size_t prompt_len, const int32_t **ids, size_t *n_ids);
    int (*forward)(soak_engine *e, const int32_t *ids, size_t n_ids, int32_t is_prefill, const float **logits,
                   int32_t *vocab);
    int (*is_stop)(soak_engine *e, int32_t id);
    int (*token_bytes)(soak_engine *e, int32_t id, const char **data, size_t *len);
    char oracle_unavailable[256]; /* why the engine cannot serve the oracle ("": it can), as soak/engine/loader.py */
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
 * (SOAK_ENGINE_ABI_MIN_VERSION to SOAK_ENGINE_ABI_VERSION), then the optional oracle functions. */
const char *load_engine(const char *path, engine_api *api, char *err, size_t err_len, const char **hint);

#endif

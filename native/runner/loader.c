/* Loads backend plugins and an engine library, and checks its ABI. */
#define _POSIX_C_SOURCE 200809L
#include "loader.h"

#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *const ERR_MISSING_LIBRARY = "missing_library";
const char *const ERR_MISSING_SYMBOL = "missing_symbol";
const char *const ERR_WRONG_ARCH = "wrong_arch";
const char *const ERR_ABI_MISMATCH = "abi_mismatch";

#if defined(__x86_64__)
#define OWN_MACHINE EM_X86_64
#elif defined(__aarch64__)
#define OWN_MACHINE EM_AARCH64
#elif defined(__arm__)
#define OWN_MACHINE EM_ARM
#elif defined(__i386__)
#define OWN_MACHINE EM_386
#elif defined(__riscv)
#define OWN_MACHINE EM_RISCV
#else
#define OWN_MACHINE 0
#endif

#if UINTPTR_MAX > 0xffffffffu
#define OWN_CLASS ELFCLASS64
#else
#define OWN_CLASS ELFCLASS32
#endif

static const char *machine_name(unsigned m) {
    switch (m) {
    case EM_X86_64: return "x86_64";
    case EM_AARCH64: return "arm64 (aarch64)";
    case EM_ARM: return "arm (32-bit)";
    case EM_386: return "x86 (32-bit)";
#ifdef EM_RISCV
    case EM_RISCV: return "riscv";
#endif
    default: return "another machine";
    }
}

/* Looks at the file's ELF header: returns a reason when it is not for this
 * process (not ELF, other class, other machine), else NULL. */
static const char *elf_mismatch(const char *path, char *why, size_t why_len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    unsigned char h[20];
    ssize_t n = read(fd, h, sizeof h);
    close(fd);
    if (n < (ssize_t)sizeof h || memcmp(h, ELFMAG, SELFMAG) != 0) {
        snprintf(why, why_len, "not an ELF shared library");
        return why;
    }
    if (h[EI_CLASS] != OWN_CLASS) {
        snprintf(why, why_len, "a %d-bit library, but this runner is %d-bit", h[EI_CLASS] == ELFCLASS64 ? 64 : 32,
                 OWN_CLASS == ELFCLASS64 ? 64 : 32);
        return why;
    }
    unsigned machine = h[EI_DATA] == ELFDATA2MSB ? (unsigned)(h[18] << 8 | h[19]) : (unsigned)(h[19] << 8 | h[18]);
    if (OWN_MACHINE && machine != OWN_MACHINE) {
        snprintf(why, why_len, "built for %s, but this runner is %s", machine_name(machine), machine_name(OWN_MACHINE));
        return why;
    }
    return NULL;
}

/* Same checks, same order and same error kinds as soak/engine/loader.py. */
static const char *open_library(const char *path, const char *role, int mode, void **handle, char *err,
                                size_t err_len, const char **hint) {
    *hint = NULL;
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(err, err_len, "%s not found: %s", role, path);
        *hint = "check the path; build the library first (see README)";
        return ERR_MISSING_LIBRARY;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, err_len, "%s is not a file: %s", role, path);
        return ERR_MISSING_LIBRARY;
    }
    char why[128];
    if (elf_mismatch(path, why, sizeof why)) {
        snprintf(err, err_len, "%s %s is %s", role, path, why);
        *hint = strcmp(why, "not an ELF shared library") == 0
                    ? "pass the .so file itself, not a folder, script or archive"
                    : "build it for this host, or run it on the device with --target adb";
        return ERR_WRONG_ARCH;
    }
    dlerror();
    *handle = dlopen(path, mode);
    if (*handle) return NULL;
    const char *msg = dlerror();
    if (!msg) msg = "dlopen failed";
    if (strstr(msg, "cannot open shared object file") || strstr(msg, "not found")) {
        snprintf(err, err_len, "%s %s needs a library that can't be found: %s", role, path, msg);
        *hint = "add the folder holding it to LD_LIBRARY_PATH";
        return ERR_MISSING_LIBRARY;
    }
    if (strstr(msg, "wrong ELF class") || strstr(msg, "invalid ELF header") || strstr(msg, "is for EM_") ||
        strstr(msg, "has unexpected e_machine")) {
        snprintf(err, err_len, "%s %s can't be loaded here: %s", role, path, msg);
        return ERR_WRONG_ARCH;
    }
    if (strstr(msg, "undefined symbol") || strstr(msg, "cannot locate symbol")) {
        snprintf(err, err_len, "%s %s has an unresolved symbol: %s", role, path, msg);
        *hint = "load the library that defines it first with --plugin";
        return ERR_MISSING_SYMBOL;
    }
    snprintf(err, err_len, "%s %s could not be loaded: %s", role, path, msg);
    return ERR_MISSING_LIBRARY;
}

const char *load_plugin(const char *path, char *err, size_t err_len, const char **hint) {
    void *handle = NULL;
    return open_library(path, "backend plugin", RTLD_NOW | RTLD_GLOBAL, &handle, err, err_len, hint);
}

/* The optional oracle functions (ABI 2): all of them, or none, with the reason in the words of
 * soak/engine/loader.py oracle_missing (the open result carries it). */
static void load_oracle(void *h, uint32_t version, engine_api *api) {
    static const char *const names[] = {"soak_engine_tokenize", "soak_engine_forward", "soak_engine_is_stop",
                                        "soak_engine_token_bytes"};
    void **slots[] = {(void **)&api->tokenize, (void **)&api->forward, (void **)&api->is_stop,
                      (void **)&api->token_bytes};
    char *why = api->oracle_unavailable;
    size_t cap = sizeof api->oracle_unavailable, used = 0;
    why[0] = '\0';
    for (size_t i = 0; i < 4; i++) {
        void *p = version >= 2 ? dlsym(h, names[i]) : NULL;
        memcpy(slots[i], &p, sizeof p);
        if (version >= 2 && !p) {
            int n = snprintf(why + used, cap - used, "%s%s", used ? ", " : "it lacks ", names[i]);
            if (n > 0 && (size_t)n < cap - used) used += (size_t)n;
        }
    }
    if (version < 2)
        snprintf(why, cap, "it implements engine ABI v%u; the oracle functions (soak_engine_tokenize, "
                 "soak_engine_forward, soak_engine_is_stop, soak_engine_token_bytes) came with v2", version);
    if (why[0]) {
        void *none = NULL;
        for (size_t i = 0; i < 4; i++) memcpy(slots[i], &none, sizeof none);
    }
}

const char *load_engine(const char *path, engine_api *api, char *err, size_t err_len, const char **hint) {
    void *h = NULL;
    /* RTLD_LOCAL for the engine, as the Python loader: plugins are the global ones. */
    const char *kind = open_library(path, "engine library", RTLD_NOW | RTLD_LOCAL, &h, err, err_len, hint);
    if (kind) return kind;

    struct {
        const char *name;
        void **slot;
    } syms[] = {
        {"soak_engine_abi_version", (void **)&api->abi_version},
        {"soak_engine_name", (void **)&api->name},
        {"soak_engine_create", (void **)&api->create},
        {"soak_engine_set_config", (void **)&api->set_config},
        {"soak_engine_load", (void **)&api->load},
        {"soak_engine_respond", (void **)&api->respond},
        {"soak_engine_reset", (void **)&api->reset},
        {"soak_engine_reinit", (void **)&api->reinit},
        {"soak_engine_status", (void **)&api->status},
        {"soak_engine_perf", (void **)&api->perf},
        {"soak_engine_destroy", (void **)&api->destroy},
    };
    char missing[512] = "";
    size_t used = 0;
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
        dlerror();
        void *p = dlsym(h, syms[i].name);
        /* memcpy: ISO C has no object->function pointer conversion. */
        memcpy(syms[i].slot, &p, sizeof p);
        if (!p) {
            int n = snprintf(missing + used, sizeof missing - used, "%s%s", used ? ", " : "", syms[i].name);
            if (n > 0 && (size_t)n < sizeof missing - used) used += (size_t)n;
        }
    }
    if (used) {
        snprintf(err, err_len, "engine library %s lacks symbol(s): %s", path, missing);
        *hint = "is it a soak engine? build it against native/include/soak_engine.h";
        return ERR_MISSING_SYMBOL;
    }
    uint32_t v = api->abi_version();
    /* older libraries lack only the optional functions (soak_engine.h): load_oracle says so */
    if (v < SOAK_ENGINE_ABI_MIN_VERSION || v > SOAK_ENGINE_ABI_VERSION) {
        snprintf(err, err_len, "engine library %s has ABI version %u, this runner needs %u to %u", path, v,
                 SOAK_ENGINE_ABI_MIN_VERSION, SOAK_ENGINE_ABI_VERSION);
        *hint = "rebuild the engine against this soak's native/include/soak_engine.h";
        return ERR_ABI_MISMATCH;
    }
    load_oracle(h, v, api);
    return NULL;
}

// soak engine ABI (native/include/soak_engine.h) on top of MNN-LLM's
// MNN::Transformer::Llm (transformers/llm/engine/include/llm/llm.hpp).
//
// Built only against an MNN build the user names (see CMakeLists.txt); the
// repository holds no MNN code.  Rules kept here:
//   - never exit/abort, never print: MNN prints its own lines, soak reads them;
//   - no C++ exception crosses the C ABI (every entry point catches);
//   - MNN keeps a pointer to the last output stream (LlmContext::os) after
//     response() returns, and a later generate() writes to it.  So the stream
//     is owned by the engine and lives as long as the Llm; each respond() only
//     points its streambuf at that call's callback, and detaches it after.
//
// Behaviour the ABI leaves to the engine:
//   - respond() in MNN's sticky error state (INTERNAL_ERROR, TIMEOUT,
//     USER_CANCEL): MNN refuses and prints "[Error]: LLM in error state.
//     Status: N"; the shim returns SOAK_ERR_STATE and zero perf.  reinit()
//     (generate_init) leaves the state; reset() does not.
//   - a callback that returns non-zero sets USER_CANCEL, which MNN's decode
//     loop honours; MNN's next forward then prints the error-state line once.
//   - set_config() rejects text that is not a JSON object (MNN would merge
//     it as null and report success).
//   - soak_mnn_generate() (not in the ABI) continues the last response.
//
// The logits oracle (ABI 2), as MNN's demo/llm_logits_diff.cpp drives it:
//   - tokenize() is what response(std::string) feeds: apply_chat_template()
//     when the config's use_template is on (MNN's default), then
//     tokenizer_encode();
//   - forward() with is_prefill starts a turn as response(ids) does
//     (generate_init, the ids appended to the context's history), then
//     Llm::forward(ids, is_prefill); a step appends its id to the history and
//     output tokens as MNN's decode loop does.  The logits stay in the VARP
//     MNN returned (no copy): the shim holds it until the next call into the
//     model, and drops it before that call runs (MNN's decode loop also drops
//     its logits before the next forward);
//   - a forward in a sticky error state is refused (SOAK_ERR_STATE) before
//     generate_init could clear that state.

#include "soak_engine.h"

#include <llm/llm.hpp>
#include <MNN/MNNDefine.h>

#include <cstdio>
#include <cstring>
#include <chrono>
#include <fstream>
#include <memory>
#include <new>
#include <ostream>
#include <streambuf>
#include <string>

#include "json_check.hpp"

using MNN::Transformer::Llm;
using MNN::Transformer::LlmContext;
using MNN::Transformer::LlmStatus;

namespace {

// Unbuffered streambuf: every write MNN makes goes straight to the callback.
class CallbackBuf : public std::streambuf {
public:
    void attach(soak_text_cb cb, void *user, LlmContext *ctx) {
        cb_ = cb;
        user_ = user;
        ctx_ = ctx;
        stopped_ = false;
    }
    void detach() { attach(nullptr, nullptr, nullptr); }
    bool stopped() const { return stopped_; }

protected:
    std::streamsize xsputn(const char *s, std::streamsize n) override {
        deliver(s, static_cast<size_t>(n));
        return n;  // bytes without a callback are dropped, never an error
    }
    int_type overflow(int_type c) override {
        if (traits_type::eq_int_type(c, traits_type::eof())) {
            return traits_type::not_eof(c);
        }
        char ch = traits_type::to_char_type(c);
        deliver(&ch, 1);
        return c;
    }

private:
    void deliver(const char *s, size_t n) {
        if (cb_ == nullptr || n == 0 || stopped_) {
            return;
        }
        if (cb_(s, n, user_) != 0) {
            // The caller asked to stop.  MNN's decode loops stop when the
            // context status is USER_CANCEL (generate.cpp); there is no
            // public setter, so set it on the context MNN owns.
            stopped_ = true;
            if (ctx_ != nullptr) {
                ctx_->status = LlmStatus::USER_CANCEL;
            }
        }
    }

    soak_text_cb cb_ = nullptr;
    void *user_ = nullptr;
    LlmContext *ctx_ = nullptr;
    bool stopped_ = false;
};

bool is_sticky(LlmStatus s) {
    return s == LlmStatus::INTERNAL_ERROR || s == LlmStatus::TIMEOUT || s == LlmStatus::USER_CANCEL;
}

void write_err(char *err, size_t err_len, const std::string &msg) {
    if (err == nullptr || err_len == 0) {
        return;
    }
    size_t n = msg.size() < err_len - 1 ? msg.size() : err_len - 1;
    std::memcpy(err, msg.data(), n);
    err[n] = '\0';
}

}  // namespace

struct soak_engine {
    Llm *llm = nullptr;
    CallbackBuf buf;
    std::ostream os{&buf};  // outlives every respond(): see the file comment
    bool loaded = false;
    soak_perf last{};
    // the oracle's outputs: valid until the next call (see soak_engine.h)
    MNN::Express::VARP logits;
    int32_t vocab = 0;  // known after the first forward
    std::vector<int32_t> ids;
    std::string token_text;

    ~soak_engine() {
        logits = nullptr;  // MNN's memory: gone before the Llm
        if (llm != nullptr) {
            Llm::destroy(llm);  // before os/buf go away
            llm = nullptr;
        }
    }
    LlmContext *ctx() const {
        // getContext() is const only for callers that read; the context is a
        // plain struct MNN owns through a shared_ptr, so writing it is defined.
        return llm ? const_cast<LlmContext *>(llm->getContext()) : nullptr;
    }
};

/* The context of a loaded engine, or nullptr when respond/reinit/generate would be
 * out of order (not loaded, or MNN says NOT_LOADED). */
static LlmContext *loaded_context(soak_engine *e) {
    LlmContext *ctx = e->ctx();
    if (!e->loaded || ctx == nullptr || ctx->status == LlmStatus::NOT_LOADED) return nullptr;
    return ctx;
}


#define SOAK_STR2(x) #x
#define SOAK_STR(x) SOAK_STR2(x)

extern "C" {

SOAK_EXPORT uint32_t soak_engine_abi_version(void) { return SOAK_ENGINE_ABI_VERSION; }

SOAK_EXPORT const char *soak_engine_name(void) {
    return "soak-mnn-shim 1.0 (MNN " SOAK_STR(MNN_VERSION_MAJOR) "." SOAK_STR(MNN_VERSION_MINOR) "." SOAK_STR(
        MNN_VERSION_PATCH) ")";
}

SOAK_EXPORT soak_engine *soak_engine_create(const char *config_path, char *err, size_t err_len) {
    try {
        if (config_path == nullptr || config_path[0] == '\0') {
            write_err(err, err_len, "no config path given (the model's config.json)");
            return nullptr;
        }
        std::string path(config_path);
        std::ifstream in(path, std::ios::binary);
        if (!in.is_open()) {
            write_err(err, err_len, "cannot open model config " + path + ": " + std::strerror(errno));
            return nullptr;
        }
        std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        std::string why;
        // MNN parses a bad config to null and goes on with defaults; say so now.
        if (path.size() >= 5 && path.compare(path.size() - 5, 5, ".json") == 0 &&
            !soak_shim::is_json_object(text, &why)) {
            write_err(err, err_len, "model config " + path + " is not a JSON object: " + why);
            return nullptr;
        }
        std::unique_ptr<soak_engine> e(new soak_engine());
        e->llm = Llm::createLLM(path);
        if (e->llm == nullptr) {
            write_err(err, err_len, "MNN Llm::createLLM returned null for " + path);
            return nullptr;
        }
        return e.release();
    } catch (const std::exception &ex) {
        write_err(err, err_len, std::string("create failed: ") + ex.what());
    } catch (...) {
        write_err(err, err_len, "create failed: unknown C++ exception");
    }
    return nullptr;
}

SOAK_EXPORT int soak_engine_set_config(soak_engine *e, const char *json) {
    if (e == nullptr || e->llm == nullptr || json == nullptr) {
        return SOAK_ERR_INVALID_ARG;
    }
    try {
        std::string text(json);
        // MNN's set_config merges a parse failure as null and returns true.
        if (!soak_shim::is_json_object(text, nullptr)) {
            return SOAK_ERR_INVALID_ARG;
        }
        return e->llm->set_config(text) ? SOAK_OK : SOAK_ERR_ENGINE;
    } catch (...) {
        return SOAK_ERR_ENGINE;
    }
}

SOAK_EXPORT int soak_engine_load(soak_engine *e) {
    if (e == nullptr || e->llm == nullptr) {
        return SOAK_ERR_INVALID_ARG;
    }
    try {
        e->loaded = e->llm->load();
        return e->loaded ? SOAK_OK : SOAK_ERR_ENGINE;
    } catch (...) {
        e->loaded = false;
        return SOAK_ERR_ENGINE;
    }
}

SOAK_EXPORT int soak_engine_respond(soak_engine *e, const char *prompt, size_t prompt_len,
                                    int32_t max_new_tokens, soak_text_cb cb, void *user) {
    if (e == nullptr || e->llm == nullptr || (prompt == nullptr && prompt_len != 0)) {
        return SOAK_ERR_INVALID_ARG;
    }
    LlmContext *ctx = loaded_context(e);
    if (ctx == nullptr) {
        return SOAK_ERR_STATE;
    }
    e->logits = nullptr;  // no stale output across MNN's next forward
    try {
        bool refused = is_sticky(ctx->status);
        std::string text(prompt == nullptr ? "" : prompt, prompt_len);  // NULs kept
        e->buf.attach(cb, user, ctx);
        // In a sticky error state MNN refuses and prints
        // "[Error]: LLM in error state. Status: N"; let it, so soak sees the line.
        e->llm->response(text, &e->os, nullptr, max_new_tokens < 0 ? -1 : max_new_tokens);
        e->os.flush();
        e->buf.detach();
        if (refused) {
            e->last = soak_perf{};
            e->last.load_us = ctx->load_us;
            return SOAK_ERR_STATE;
        }
        e->last.prompt_tokens = ctx->prompt_len;
        e->last.generated_tokens = ctx->gen_seq_len;
        e->last.prefill_us = ctx->prefill_us;
        e->last.decode_us = ctx->decode_us;
        e->last.load_us = ctx->load_us;
        return SOAK_OK;
    } catch (...) {
        e->buf.detach();
        return SOAK_ERR_ENGINE;
    }
}

SOAK_EXPORT int soak_engine_reset(soak_engine *e) {
    if (e == nullptr || e->llm == nullptr) {
        return SOAK_ERR_INVALID_ARG;
    }
    if (!e->loaded) {
        return SOAK_ERR_STATE;
    }
    e->logits = nullptr;
    try {
        e->llm->reset();
        return SOAK_OK;
    } catch (...) {
        return SOAK_ERR_ENGINE;
    }
}

SOAK_EXPORT int soak_engine_reinit(soak_engine *e) {
    if (e == nullptr || e->llm == nullptr) {
        return SOAK_ERR_INVALID_ARG;
    }
    LlmContext *ctx = loaded_context(e);
    if (ctx == nullptr) {
        return SOAK_ERR_STATE;
    }
    try {
        MNN::Express::ExecutorScope scope(e->llm->getExecutor());
        // Our own stream, detached: MNN never holds a pointer we don't own.
        e->llm->generate_init(&e->os, nullptr);
        return ctx->status == LlmStatus::RUNNING ? SOAK_OK : SOAK_ERR_ENGINE;
    } catch (...) {
        return SOAK_ERR_ENGINE;
    }
}

SOAK_EXPORT int soak_engine_status(soak_engine *e) {
    if (e == nullptr || e->llm == nullptr) {
        return SOAK_STATUS_NOT_LOADED;
    }
    const LlmContext *ctx = e->llm->getContext();
    return ctx ? static_cast<int>(ctx->status) : SOAK_STATUS_NOT_LOADED;
}

SOAK_EXPORT int soak_engine_perf(soak_engine *e, soak_perf *out) {
    if (e == nullptr || e->llm == nullptr || out == nullptr) {
        return SOAK_ERR_INVALID_ARG;
    }
    *out = e->last;
    const LlmContext *ctx = e->llm->getContext();
    if (ctx != nullptr) {
        out->load_us = ctx->load_us;
    }
    return SOAK_OK;
}

/* MNN's use_template (default on), from the merged config MNN dumps. */
static bool uses_template(Llm *llm) {
    std::string cfg = llm->dump_config();
    const std::string key = "\"use_template\"";
    size_t at = cfg.find(key);
    if (at == std::string::npos) return true;
    at += key.size();
    while (at < cfg.size() && (cfg[at] == ' ' || cfg[at] == '\t' || cfg[at] == '\n' || cfg[at] == '\r' || cfg[at] == ':'))
        ++at;
    return cfg.compare(at, 5, "false") != 0;
}

SOAK_EXPORT int soak_engine_tokenize(soak_engine *e, const char *prompt, size_t prompt_len, const int32_t **ids,
                                     size_t *n_ids) {
    if (e == nullptr || e->llm == nullptr || ids == nullptr || n_ids == nullptr ||
        (prompt == nullptr && prompt_len != 0)) {
        return SOAK_ERR_INVALID_ARG;
    }
    if (loaded_context(e) == nullptr) {
        return SOAK_ERR_STATE;
    }
    try {
        std::string text(prompt == nullptr ? "" : prompt, prompt_len);
        if (uses_template(e->llm)) {
            // as response(std::string): the template, or the bare text when it gives nothing
            std::string templated = e->llm->apply_chat_template(text);
            if (!templated.empty()) {
                text = templated;
            }
        }
        std::vector<int> got = e->llm->tokenizer_encode(text);
        e->ids.assign(got.begin(), got.end());
        *ids = e->ids.data();
        *n_ids = e->ids.size();
        return SOAK_OK;
    } catch (...) {
        return SOAK_ERR_ENGINE;
    }
}

SOAK_EXPORT int soak_engine_forward(soak_engine *e, const int32_t *ids, size_t n_ids, int32_t is_prefill,
                                    const float **logits, int32_t *vocab) {
    if (e == nullptr || e->llm == nullptr || ids == nullptr || n_ids == 0 || logits == nullptr || vocab == nullptr) {
        return SOAK_ERR_INVALID_ARG;
    }
    for (size_t k = 0; k < n_ids; ++k) {
        if (ids[k] < 0 || (e->vocab > 0 && ids[k] >= e->vocab)) {
            return SOAK_ERR_INVALID_ARG;
        }
    }
    LlmContext *ctx = loaded_context(e);
    if (ctx == nullptr || is_sticky(ctx->status)) {
        return SOAK_ERR_STATE;
    }
    e->logits = nullptr;  // the last step's output goes before MNN runs again
    try {
        MNN::Express::ExecutorScope scope(e->llm->getExecutor());
        std::vector<int> input(ids, ids + n_ids);
        auto t0 = std::chrono::steady_clock::now();
        if (is_prefill) {
            // Llm::response(ids): generate_init, then generate() records the prompt
            e->llm->generate_init(&e->os, nullptr);
            ctx->prompt_len = static_cast<int>(n_ids);
            ctx->history_tokens.insert(ctx->history_tokens.end(), input.begin(), input.end());
            e->last = soak_perf{};
        } else {
            // MNN's decode loop: the fed token is the one it sampled and recorded
            ctx->history_tokens.insert(ctx->history_tokens.end(), input.begin(), input.end());
            ctx->output_tokens.insert(ctx->output_tokens.end(), input.begin(), input.end());
            ctx->current_token = input.back();
        }
        MNN::Express::VARP out = e->llm->forward(input, is_prefill != 0);
        const MNN::Express::Variable::Info *info = out.get() != nullptr ? out->getInfo() : nullptr;
        if (info == nullptr || info->dim.empty() || info->size <= 0 ||
            info->type.code != halide_type_float || info->type.bits != 32) {
            return SOAK_ERR_ENGINE;
        }
        const float *p = out->readMap<float>();  // waits for the backend, maps its output
        if (p == nullptr) {
            return SOAK_ERR_ENGINE;
        }
        int32_t n = static_cast<int32_t>(info->dim.back());
        if (n <= 0 || info->size % n != 0) {
            return SOAK_ERR_ENGINE;
        }
        int64_t us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0)
                         .count() + 1;
        if (is_prefill) {
            e->last.prompt_tokens = static_cast<int32_t>(n_ids);
            e->last.prefill_us = us;
        } else {
            e->last.generated_tokens += static_cast<int32_t>(n_ids);
            e->last.decode_us += us;
        }
        e->last.load_us = ctx->load_us;
        e->logits = out;
        e->vocab = n;
        *logits = p + (info->size / n - 1) * static_cast<size_t>(n);  // the last position
        *vocab = n;
        return SOAK_OK;
    } catch (...) {
        e->logits = nullptr;
        return SOAK_ERR_ENGINE;
    }
}

SOAK_EXPORT int soak_engine_is_stop(soak_engine *e, int32_t id) {
    if (e == nullptr || e->llm == nullptr || id < 0 || (e->vocab > 0 && id >= e->vocab)) {
        return SOAK_ERR_INVALID_ARG;
    }
    if (loaded_context(e) == nullptr) {
        return SOAK_ERR_STATE;
    }
    try {
        return e->llm->is_stop(id) ? 1 : 0;
    } catch (...) {
        return SOAK_ERR_ENGINE;
    }
}

SOAK_EXPORT int soak_engine_token_bytes(soak_engine *e, int32_t id, const char **data, size_t *len) {
    if (e == nullptr || e->llm == nullptr || data == nullptr || len == nullptr || id < 0 ||
        (e->vocab > 0 && id >= e->vocab)) {
        return SOAK_ERR_INVALID_ARG;
    }
    if (loaded_context(e) == nullptr) {
        return SOAK_ERR_STATE;
    }
    try {
        e->token_text = e->llm->tokenizer_decode(id);
        *data = e->token_text.data();
        *len = e->token_text.size();
        return SOAK_OK;
    } catch (...) {
        return SOAK_ERR_ENGINE;
    }
}

SOAK_EXPORT void soak_engine_destroy(soak_engine *e) {
    try {
        delete e;
    } catch (...) {
    }
}

/* Not part of the ABI: continue the last response by up to max_tokens tokens
 * through MNN's Llm::generate(int), as llm_demo's benchmark loop does.  The
 * text goes through cb.  soak uses it to check that MNN's saved stream pointer
 * is still valid after earlier respond() calls (a dangling one crashes here). */
SOAK_EXPORT int soak_mnn_generate(soak_engine *e, int32_t max_tokens, soak_text_cb cb, void *user) {
    if (e == nullptr || e->llm == nullptr || max_tokens < 0) {
        return SOAK_ERR_INVALID_ARG;
    }
    LlmContext *ctx = loaded_context(e);
    if (ctx == nullptr) {
        return SOAK_ERR_STATE;
    }
    e->logits = nullptr;
    try {
        bool refused = is_sticky(ctx->status);
        e->buf.attach(cb, user, ctx);
        e->llm->generate(max_tokens);
        e->os.flush();
        e->buf.detach();
        if (refused) {
            return SOAK_ERR_STATE;
        }
        e->last.generated_tokens = ctx->gen_seq_len;
        e->last.decode_us = ctx->decode_us;
        return SOAK_OK;
    } catch (...) {
        e->buf.detach();
        return SOAK_ERR_ENGINE;
    }
}

}  // extern "C"

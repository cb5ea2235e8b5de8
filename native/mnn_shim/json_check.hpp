// Strict JSON syntax check (RFC 8259) for the shim: MNN's own parser turns a
// malformed config into null and carries on with defaults, which would make a
// typo in --config silently ignored.  Validates only; builds nothing.
#ifndef SOAK_SHIM_JSON_CHECK_HPP
#define SOAK_SHIM_JSON_CHECK_HPP

#include <cstddef>
#include <string>

namespace soak_shim {

class JsonCheck {
public:
    explicit JsonCheck(const std::string &s) : s_(s) {}

    // True if the whole text is one JSON object (whitespace around allowed).
    bool object(std::string *why) {
        ws();
        if (!peek('{')) {
            return fail(why, "expected '{' at the start");
        }
        if (!value(0)) {
            return fail(why, err_);
        }
        ws();
        if (i_ != s_.size()) {
            return fail(why, "trailing characters after the object");
        }
        return true;
    }

private:
    static constexpr int kMaxDepth = 256;

    bool fail(std::string *why, const std::string &msg) {
        if (why != nullptr) {
            *why = msg + " (byte " + std::to_string(i_) + ")";
        }
        return false;
    }
    bool bad(const char *msg) {
        err_ = msg;
        return false;
    }
    void ws() {
        while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) {
            ++i_;
        }
    }
    bool peek(char c) const { return i_ < s_.size() && s_[i_] == c; }
    bool lit(const char *w) {
        size_t n = std::char_traits<char>::length(w);
        if (s_.compare(i_, n, w) != 0) {
            return bad("invalid literal");
        }
        i_ += n;
        return true;
    }
    bool value(int depth) {
        if (depth > kMaxDepth) {
            return bad("nested too deeply");
        }
        ws();
        if (i_ >= s_.size()) {
            return bad("unexpected end of text");
        }
        switch (s_[i_]) {
            case '{': return obj(depth);
            case '[': return arr(depth);
            case '"': return str();
            case 't': return lit("true");
            case 'f': return lit("false");
            case 'n': return lit("null");
            default: return num();
        }
    }
    bool obj(int depth) {
        ++i_;
        ws();
        if (peek('}')) {
            ++i_;
            return true;
        }
        for (;;) {
            ws();
            if (!peek('"')) {
                return bad("expected a string key");
            }
            if (!str()) {
                return false;
            }
            ws();
            if (!peek(':')) {
                return bad("expected ':'");
            }
            ++i_;
            if (!value(depth + 1)) {
                return false;
            }
            ws();
            if (peek(',')) {
                ++i_;
                continue;
            }
            if (peek('}')) {
                ++i_;
                return true;
            }
            return bad("expected ',' or '}'");
        }
    }
    bool arr(int depth) {
        ++i_;
        ws();
        if (peek(']')) {
            ++i_;
            return true;
        }
        for (;;) {
            if (!value(depth + 1)) {
                return false;
            }
            ws();
            if (peek(',')) {
                ++i_;
                continue;
            }
            if (peek(']')) {
                ++i_;
                return true;
            }
            return bad("expected ',' or ']'");
        }
    }
    static bool hex(char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
    }
    bool str() {
        ++i_;
        while (i_ < s_.size()) {
            unsigned char c = static_cast<unsigned char>(s_[i_]);
            if (c == '"') {
                ++i_;
                return true;
            }
            if (c < 0x20) {
                return bad("control character in a string");
            }
            if (c == '\\') {
                ++i_;
                if (i_ >= s_.size()) {
                    break;
                }
                char e = s_[i_];
                if (e == 'u') {
                    for (int k = 1; k <= 4; ++k) {
                        if (i_ + k >= s_.size() || !hex(s_[i_ + k])) {
                            return bad("bad \\u escape");
                        }
                    }
                    i_ += 4;
                } else if (std::string("\"\\/bfnrt").find(e) == std::string::npos) {
                    return bad("bad escape");
                }
            }
            ++i_;
        }
        return bad("unterminated string");
    }
    bool digits() {
        size_t start = i_;
        while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') {
            ++i_;
        }
        return i_ > start;
    }
    bool num() {
        if (peek('-')) {
            ++i_;
        }
        if (peek('0')) {
            ++i_;
        } else if (!digits()) {
            return bad("unexpected character");
        }
        if (peek('.')) {
            ++i_;
            if (!digits()) {
                return bad("bad number");
            }
        }
        if (peek('e') || peek('E')) {
            ++i_;
            if (peek('+') || peek('-')) {
                ++i_;
            }
            if (!digits()) {
                return bad("bad number");
            }
        }
        return true;
    }

    const std::string &s_;
    size_t i_ = 0;
    const char *err_ = "invalid JSON";
};

inline bool is_json_object(const std::string &text, std::string *why) {
    return JsonCheck(text).object(why);
}

}  // namespace soak_shim

#endif

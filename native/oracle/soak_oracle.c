/* soak's wrong-answer oracle: see soak_oracle.h. */
#include "soak_oracle.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))
#define PROB_FLOOR 1e-12

int EXPORT soak_oracle_version(void) { return SOAK_ORACLE_VERSION; }

/* exp(x) for finite x <= 0 (x below -87 gives 0): range reduction to 2^n * exp(r), |r| <= ln2/2, and a
 * degree-6 polynomial; relative error about 2e-7.  Branch-free, so the sum loops vectorise: a 151,936-token
 * vocabulary costs tens of microseconds per step, not the milliseconds of libm's expf. */
static inline float exp_nonpos(float x) {
    x = x < -87.0f ? -87.0f : x;
    /* round to nearest through the float adder (1.5 * 2^23): no libm call, so the loop vectorises */
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693145751953125f - n * 1.428606765330187045e-06f;
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (0.1666666716f + r * (0.04166664183f + r * (0.008333335072f
              + r * 0.001388889225f)))));
    union { float f; int32_t i; } scale;
    scale.i = ((int32_t)n + 127) << 23;
    return p * scale.f;
}

static inline int is_bad(float v) { return isnan(v) || (isinf(v) && v > 0); }

/* Keep the k largest (value, id) pairs seen, highest first; `count` of them are filled. */
static inline void top_insert(float v, int32_t id, float *vals, int32_t *ids, int32_t k, int32_t *count) {
    int32_t pos = *count < k ? *count : k - 1;
    if (*count == k && !(v > vals[k - 1])) return;
    while (pos > 0 && vals[pos - 1] < v) {
        vals[pos] = vals[pos - 1];
        ids[pos] = ids[pos - 1];
        --pos;
    }
    vals[pos] = v;
    ids[pos] = id;
    if (*count < k) ++*count;
}

/* Count NaN/+inf (a branch-free pass that vectorises), then keep the top k of the rest, highest first
 * (-inf included: it never wins a place while anything finite is left). */
static int32_t scan(const float *x, int32_t n, int32_t k, float *vals, int32_t *ids, int32_t *filled) {
    int32_t bad = 0;
    for (int32_t i = 0; i < n; ++i) bad += (x[i] != x[i]) | (x[i] == INFINITY);
    *filled = 0;
    int32_t i = 0;
    for (; i < n && *filled < k; ++i)
        if (!is_bad(x[i])) top_insert(x[i], i, vals, ids, k, filled);
    for (; i < n; ++i) {
        float v = x[i];
        if (v > vals[k - 1] && v != INFINITY) top_insert(v, i, vals, ids, k, filled);  /* NaN compares false */
    }
    return bad;
}

/* log-sum-exp over finite values given their max m (finite).  Eight float lanes over blocks of 1,024 values,
 * each block's sums added in double: the exps vectorise and a 151,936-token vocabulary loses no precision. */
static double lse_from(const float *x, int32_t n, float m, int32_t any_bad) {
    double s = 0.0;
    int32_t i = 0;
    if (!any_bad) {
        for (; i + 1024 <= n; i += 1024) {
            float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            for (int32_t b = 0; b < 1024; b += 8)
                for (int j = 0; j < 8; ++j) acc[j] += exp_nonpos(x[i + b + j] - m);
            for (int j = 0; j < 8; ++j) s += acc[j];
        }
    }
    for (; i < n; ++i) {
        float v = x[i];
        if (is_bad(v) || isinf(v)) continue;
        s += (double)exp_nonpos(v - m);
    }
    return (double)m + log(s);
}

int EXPORT soak_oracle_topk(const float *logits, int32_t n, int32_t k, int32_t *ids, float *logprobs, double *lse) {
    if (!logits || !ids || !logprobs || !lse || n <= 0 || k < 1 || k > SOAK_ORACLE_MAX_K || k > n)
        return SOAK_ORACLE_BAD_ARGS;
    float vals[SOAK_ORACLE_MAX_K];
    int32_t filled;
    if (scan(logits, n, k, vals, ids, &filled) != 0) return SOAK_ORACLE_NONFINITE;
    if (filled < k || isinf(vals[0])) return SOAK_ORACLE_NONFINITE;
    *lse = lse_from(logits, n, vals[0], 0);
    for (int32_t j = 0; j < k; ++j) logprobs[j] = (float)((double)vals[j] - *lse);
    return SOAK_ORACLE_OK;
}

int EXPORT soak_oracle_compare(const float *logits, int32_t n, int32_t k, const int32_t *ref_ids,
                               const float *ref_logprobs, int32_t ref_token, soak_step_metrics *out) {
    if (!logits || !ref_ids || !ref_logprobs || !out || n <= 0 || k < 1 || k > SOAK_ORACLE_MAX_K || k > n ||
        ref_token < 0 || ref_token >= n)
        return SOAK_ORACLE_BAD_ARGS;
    for (int32_t j = 0; j < k; ++j)
        if (ref_ids[j] < 0 || ref_ids[j] >= n) return SOAK_ORACLE_BAD_ARGS;
    memset(out, 0, sizeof *out);

    float cvals[SOAK_ORACLE_MAX_K];
    int32_t cids[SOAK_ORACLE_MAX_K];
    int32_t filled;
    int32_t bad = scan(logits, n, k, cvals, cids, &filled);
    out->nonfinite = bad;
    if (filled == 0 || isinf(cvals[0])) {  /* nothing finite: every measure is at its worst */
        out->argmax = -1;
        out->ref_rank = -1;
        out->kl = out->nmse = out->max_abs = INFINITY;
        out->ref_logprob = -INFINITY;
        out->margin = 0.0;
        return SOAK_ORACLE_OK;
    }
    double lse = lse_from(logits, n, cvals[0], bad);
    out->argmax = cids[0];
    out->agree = cids[0] == ref_token;
    out->margin = filled > 1 ? (double)cvals[0] - (double)cvals[1] : INFINITY;

    float tv = logits[ref_token];
    if (isnan(tv)) {
        out->ref_rank = -1;
    } else {
        int32_t above = 0;
        for (int32_t i = 0; i < n; ++i) above += logits[i] > tv;  /* NaN compares false */
        out->ref_rank = above;
    }
    out->ref_logprob = is_bad(tv) ? -INFINITY : (double)tv - lse;

    /* log-probabilities over the reference's top-k ids: NMSE of the centred values and the max |delta| */
    double ref_mean = 0.0, cand_mean = 0.0, cand_lp[SOAK_ORACLE_MAX_K];
    int32_t cand_bad = 0;
    for (int32_t j = 0; j < k; ++j) {
        float v = logits[ref_ids[j]];
        cand_lp[j] = is_bad(v) ? NAN : (double)v - lse;
        cand_bad |= !isfinite(cand_lp[j]);
        ref_mean += ref_logprobs[j];
        cand_mean += cand_lp[j];
    }
    if (cand_bad) {
        out->nmse = out->max_abs = INFINITY;
    } else {
        ref_mean /= k;
        cand_mean /= k;
        double num = 0.0, den = 0.0, worst = 0.0;
        for (int32_t j = 0; j < k; ++j) {
            double a = ref_logprobs[j] - ref_mean, b = cand_lp[j] - cand_mean;
            num += (a - b) * (a - b);
            den += a * a;
            double d = fabs(cand_lp[j] - (double)ref_logprobs[j]);
            if (d > worst) worst = d;
        }
        out->nmse = num / (den > 1e-30 ? den : 1e-30);
        out->max_abs = worst;
    }

    /* KL(ref || cand) over U = ref top-k union cand top-k, plus a bucket for the rest.  An id of U outside
     * the reference's top-k gets the reference's k-th probability (an upper bound of its true value);
     * the rest buckets take what U leaves of 1 (at least 0), and both sides are renormalised. */
    int32_t uids[2 * SOAK_ORACLE_MAX_K];
    double pref[2 * SOAK_ORACLE_MAX_K + 1], pcand[2 * SOAK_ORACLE_MAX_K + 1];
    int32_t u = 0;
    double floor_p = exp((double)ref_logprobs[k - 1]);
    for (int32_t j = 0; j < k; ++j) {
        uids[u] = ref_ids[j];
        pref[u++] = exp((double)ref_logprobs[j]);
    }
    for (int32_t j = 0; j < filled; ++j) {
        int32_t found = 0;
        for (int32_t i = 0; i < k && !found; ++i) found = ref_ids[i] == cids[j];
        if (found) continue;
        uids[u] = cids[j];
        pref[u++] = floor_p;
    }
    double sref = 0.0, scand = 0.0;
    for (int32_t i = 0; i < u; ++i) {
        float v = logits[uids[i]];
        pcand[i] = is_bad(v) ? 0.0 : exp((double)v - lse);
        sref += pref[i];
        scand += pcand[i];
    }
    pref[u] = sref < 1.0 ? 1.0 - sref : 0.0;
    pcand[u] = scand < 1.0 ? 1.0 - scand : 0.0;
    double zref = sref + pref[u], zcand = scand + pcand[u], kl = 0.0;
    for (int32_t i = 0; i <= u; ++i) {
        double p = pref[i] / zref, q = pcand[i] / zcand;
        if (p > PROB_FLOOR) kl += p * log(p / (q > PROB_FLOOR ? q : PROB_FLOOR));
    }
    out->kl = kl > 0.0 ? kl : 0.0;
    return SOAK_ORACLE_OK;
}

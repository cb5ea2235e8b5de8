/* soak's wrong-answer oracle: the per-step comparison of an engine's logits with a reference.
 *
 * One implementation for every worker (the Python worker through ctypes, soak-runner on a phone),
 * so the candidate's full logits never leave the process that computed them: only these metrics do.
 *
 * A reference step (made by soak_oracle_topk on the oracle engine's logits) holds the oracle's top-k
 * token ids with their log-probabilities, sorted by log-probability (highest first), and the token
 * the oracle generated (its greedy argmax).  The candidate's step is compared by
 * soak_oracle_compare.  See docs/ORACLE.md for the definitions.
 */
#ifndef SOAK_ORACLE_H
#define SOAK_ORACLE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SOAK_ORACLE_VERSION 1
#define SOAK_ORACLE_MAX_K 64

/* return codes */
#define SOAK_ORACLE_OK 0
#define SOAK_ORACLE_BAD_ARGS (-1)      /* null pointer, n <= 0, k out of 1..SOAK_ORACLE_MAX_K, id out of range */
#define SOAK_ORACLE_NONFINITE (-2)     /* topk: the logits hold NaN or +inf (a reference must be finite) */

typedef struct soak_step_metrics {
    int32_t argmax;            /* the candidate's argmax id; -1 when no logit is finite */
    int32_t agree;             /* 1 when argmax == the reference's token */
    int32_t ref_rank;          /* how many candidate logits are above the reference token's (0: it is the
                                  candidate's top); -1 when the candidate's value for it is NaN */
    int32_t nonfinite;         /* NaN and +inf values in the candidate's logits (-inf counts as probability 0) */
    double kl;                 /* KL(reference || candidate) in nats over the union of both top-k sets plus one
                                  bucket for the rest of the vocabulary; +inf when the candidate has no finite logit */
    double nmse;               /* normalised mean squared error of the centred log-probabilities over the
                                  reference's top-k ids */
    double max_abs;            /* max |candidate log-prob - reference log-prob| over the reference's top-k ids */
    double ref_logprob;        /* the candidate's log-probability of the reference token (teacher-forced NLL = -it) */
    double margin;             /* candidate top-1 minus top-2 logit */
} soak_step_metrics;

/* The top k ids of `logits` (n values) by value, their log-probabilities and the log-sum-exp. */
int soak_oracle_topk(const float *logits, int32_t n, int32_t k, int32_t *ids, float *logprobs, double *lse);

/* Compare the candidate's logits (n values) with one reference step. */
int soak_oracle_compare(const float *logits, int32_t n, int32_t k, const int32_t *ref_ids,
                        const float *ref_logprobs, int32_t ref_token, soak_step_metrics *out);

int soak_oracle_version(void);

#ifdef __cplusplus
}
#endif
#endif

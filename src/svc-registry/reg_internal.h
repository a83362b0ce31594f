/*
 * reg_internal.h - for svc-registry's own files and tests only: the committed
 * record (descriptor + approvals + hash) and the chain rules shared by the
 * registry (reg.c) and the verifier (reg_verify.c).
 */
#ifndef REG_INTERNAL_H
#define REG_INTERNAL_H

#include "svc_registry.h"

typedef struct {
    uint8_t pk[REG_KEY_LEN];
    uint8_t sig[REG_SIG_LEN];
} reg_approval_t;

/* One committed version. hash = BLAKE3 of the descriptor's canonical bytes. */
typedef struct {
    reg_desc_t desc;
    size_t n_appr;
    reg_approval_t appr[REG_MAX_SIGNERS]; /* sorted by pk, distinct */
    uint8_t hash[REG_HASH_LEN];
} reg_record_t;

/* Parse one record line (no newline) that must be byte-for-byte canonical;
 * checks that hash is the descriptor's. Signatures are not checked here.
 * Returns 0 or RON_EREGCHAIN (err says why). */
int reg__record_parse(const char *line, size_t len, reg_record_t *r, reg_err_t *err);

/* Canonical line of r (no newline), new in *out. Sorts r's approvals. Returns
 * 0 or RON_EREGDESC. */
int reg__record_encode(reg_record_t *r, char **out, size_t *out_len);

/* d follows head (NULL: nothing committed; head_hash then ignored): version,
 * prev and cumulative revocations. Returns 0, RON_EREGSTALE or RON_EREGDESC. */
int reg__check_link(const reg_desc_t *head, const uint8_t *head_hash, const reg_desc_t *d,
                    reg_err_t *err);

/* Whether pk is in d's signer set / revoked list. */
bool reg__is_signer(const reg_desc_t *d, const uint8_t pk[static REG_KEY_LEN]);
bool reg__is_revoked(const reg_desc_t *d, const uint8_t pk[static REG_KEY_LEN]);

/* The approvals of r (distinct, sorted) are >= in_force->threshold valid
 * signatures of r->hash by signers of in_force. Returns 0, RON_EREGQUORUM,
 * RON_EREGSIGNER, RON_EREGSIG or RON_EREGDUP. */
int reg__check_approvals(const reg_desc_t *in_force, const reg_record_t *r, reg_err_t *err);

/* Format err (NULL allowed). */
void reg__err(reg_err_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif

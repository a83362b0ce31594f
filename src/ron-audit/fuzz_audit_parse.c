/*
 * fuzz_audit_parse.c - libFuzzer target for the audit record and checkpoint
 * parsers and the verifier: any bytes must parse or be refused, never crash
 * or read out of bounds. A record that parses must re-encode to the same
 * bytes (canonical form); the whole input is also verified as a log and as a
 * checkpoint file, and split at its first NUL into a log and checkpoints.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ron_audit.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    aud_record_t *rec = malloc(sizeof *rec);
    aud_checkpoint_t cp;
    aud_report_t rep;
    char again[AUD_MAX_RECORD];
    uint8_t h[AUD_HASH_LEN];
    const uint8_t *nul;

    if (rec == NULL)
        return 0;
    if (aud_record_parse(s, size, rec) == 0) {
        aud_event_t ev = {rec->ts_ms,     rec->kind,   rec->actor,   rec->tenant,
                          rec->op,        rec->target, rec->outcome, rec->reason};
        int n = aud_record_encode(&ev, rec->seq, rec->prev, again, sizeof again, h);
        if (n <= 0 || memcmp(h, rec->computed, AUD_HASH_LEN) != 0)
            abort();
        /* Same bytes up to the stored hash, which may differ (an edited record). */
        if ((size_t)n < 2 * AUD_HASH_LEN + 12 || memcmp(again, s, (size_t)n - 2 * AUD_HASH_LEN - 12) != 0)
            abort();
    }
    if (aud_checkpoint_parse(s, size, &cp) == 0)
        (void)aud_checkpoint_sig_ok(&cp);
    (void)aud_verify_buf(s, size, NULL, 0, NULL, true, &rep);
    (void)aud_verify_buf(s, size, NULL, 0, NULL, false, &rep);
    (void)aud_verify_buf("", 0, s, size, NULL, true, &rep);
    nul = memchr(data, 0, size);
    if (nul != NULL) {
        size_t a = (size_t)(nul - data);
        (void)aud_verify_buf(s, a, s + a + 1, size - a - 1, NULL, true, &rep);
    }
    free(rec);
    return 0;
}

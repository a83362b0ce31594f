/*
 * fuzz_registry_parse.c - libFuzzer target for the registry's parsers: the
 * descriptor set (what `propose` reads from a client), the committed record
 * line and the whole-log verifier. Any bytes must parse or be refused, never
 * crash, leak or read out of bounds. Property: a descriptor that parses
 * encodes canonically, and the canonical bytes parse back to the same bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "reg_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    reg_desc_t *d = malloc(sizeof *d), *d2 = malloc(sizeof *d2);
    reg_record_t *rec = malloc(sizeof *rec);
    reg_report_t rep;
    reg_err_t err;
    char *txt = NULL, *txt2 = NULL;
    size_t n, n2;

    if (d == NULL || d2 == NULL || rec == NULL)
        goto out;
    if (reg_desc_parse(s, size, d, &err) == 0) {
        if (reg_desc_encode(d, &txt, &n) != 0)
            abort();
        if (reg_desc_parse(txt, n, d2, &err) != 0 || reg_desc_encode(d2, &txt2, &n2) != 0 ||
            n2 != n || memcmp(txt, txt2, n) != 0)
            abort();
    }
    if (reg__record_parse(s, size, rec, &err) == 0 && !(rec->n_appr <= REG_MAX_SIGNERS))
        abort();
    (void)reg_verify_buf(s, size, 0, NULL, &rep);
    if (rep.good_len > size)
        abort();
out:
    free(txt);
    free(txt2);
    free(d);
    free(d2);
    free(rec);
    return 0;
}

/*
 * fuzz_name_record.c - fuzz target for the record decoders: the JSON form
 * and the binary form. Properties: a record decoded from JSON encodes back
 * to JSON that decodes to the same record, and its binary form decodes to
 * the same record too; a record decoded from binary re-encodes to exactly
 * the input bytes. Signatures are checked too (they must not crash).
 */
#include <stdlib.h>
#include <string.h>

#include "ron_naming.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Field by field: struct padding is not compared. */
static bool
record_eq(const name_record_t *a, const name_record_t *b)
{
    return strcmp(a->name, b->name) == 0 && memcmp(a->addr.b, b->addr.b, NAME_ADDR_LEN) == 0 &&
           a->seq == b->seq && a->ts == b->ts && memcmp(a->owner, b->owner, NAME_KEY_LEN) == 0 &&
           a->has_new_owner == b->has_new_owner &&
           (!a->has_new_owner || memcmp(a->new_owner, b->new_owner, NAME_KEY_LEN) == 0) &&
           memcmp(a->sig, b->sig, NAME_SIG_LEN) == 0;
}

static void
roundtrip(const name_record_t *rec)
{
    name_record_t back;
    name_err_t err;
    uint8_t bin[NAME_RECORD_MAX];
    char *json = name_record_to_json(rec);

    if (json == NULL)
        abort();
    if (name_record_from_json(&back, json, strlen(json), &err) != 0 || !record_eq(&back, rec))
        abort();
    free(json);
    ssize_t n = name_record_encode(rec, bin, sizeof bin);
    if (n <= 0 || name_record_decode(&back, bin, (size_t)n, &err) != 0 || !record_eq(&back, rec))
        abort();
    (void)name_record_verify(rec, &err);
    (void)name_record_accept(NULL, rec, 1700000000, &err);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    name_record_t rec;
    name_err_t err;
    uint8_t bin[NAME_RECORD_MAX];

    if (name_record_from_json(&rec, (const char *)data, size, &err) == 0)
        roundtrip(&rec);
    if (name_record_decode(&rec, data, size, &err) == 0) {
        ssize_t n = name_record_encode(&rec, bin, sizeof bin);
        if (n != (ssize_t)size || memcmp(bin, data, size) != 0)
            abort();
        roundtrip(&rec);
    }
    return 0;
}

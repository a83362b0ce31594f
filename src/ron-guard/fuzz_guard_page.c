/*
 * fuzz_guard_page.c - fuzz target for the authority's page and entry JSON
 * (what a guard accepts from the kernel over the bus). Properties: decoding
 * never crashes or reads out of bounds; a page or entry that decodes
 * re-encodes, and the re-encoding decodes to the same values (the codec is
 * lossless), within GUARD_MAX_ENTRY_JSON per entry; decoded pages always
 * have prev <= head and strictly increasing seqs inside (prev, head].
 */
#include <stdlib.h>
#include <string.h>

#include "guard_internal.h"
#include "ron_err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_same(const guard_entry_t *a, const guard_entry_t *b)
{
    if (a->seq != b->seq || a->kind != b->kind)
        abort();
    if (a->kind == GUARD_E_KIDS) {
        if (a->n_kids != b->n_kids)
            abort();
        for (size_t i = 0; i < a->n_kids; i++)
            if (strcmp(a->kids[i], b->kids[i]) != 0)
                abort();
    } else if (a->kind == GUARD_E_EPOCH) {
        if (a->epoch != b->epoch)
            abort();
    } else if (memcmp(a->nonce, b->nonce, AUTH_NONCE_LEN) != 0 || a->until != b->until) {
        abort();
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static guard_entry_t e[GUARD_SYNC_PAGE], e2[GUARD_SYNC_PAGE];
    static char buf[GUARD__PAGE_MAX_JSON];
    guard_entry_t one, two;
    char ebuf[GUARD_MAX_ENTRY_JSON + 1];

    if (guard_entry_decode((const char *)data, size, &one) == 0) {
        int n = guard_entry_encode(&one, ebuf, sizeof ebuf);
        if (n <= 0 || guard_entry_decode(ebuf, (size_t)n, &two) != 0)
            abort();
        check_same(&one, &two);
    }
    uint64_t prev, head, prev2, head2;
    long n = guard_page_decode((const char *)data, size, &prev, &head, e, GUARD_SYNC_PAGE);
    if (n >= 0) {
        if (prev > head)
            abort();
        for (long i = 0; i < n; i++)
            if (e[i].seq <= (i ? e[i - 1].seq : prev) || e[i].seq > head)
                abort();
        long w = guard_page_encode(prev, head, e, (size_t)n, buf, sizeof buf);
        if (w < 0)
            abort();
        long m = guard_page_decode(buf, (size_t)w, &prev2, &head2, e2, GUARD_SYNC_PAGE);
        if (m != n || prev2 != prev || head2 != head)
            abort();
        for (long i = 0; i < n; i++)
            check_same(&e[i], &e2[i]);
    }
    return 0;
}

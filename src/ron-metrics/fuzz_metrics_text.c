/*
 * fuzz_metrics_text.c - libFuzzer target for the strict exposition parser
 * behind met_merge_add. Beyond not crashing, it checks the merger's promise:
 * whatever it accepts it renders as text that parses again with no rejected
 * line, the same number of samples and the same bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ron_metrics.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    met_merge_t *m = met_merge_new();
    met_merge_stats_t a, b, c;
    char *out, *out2;
    size_t len, len2;

    /* The same bytes as the kernel's text and as a child's: exercises both
     * the pass-through and the service-label paths, and type clashes. */
    met_merge_add(m, NULL, (const char *)data, size, &a);
    met_merge_add(m, "fuzz", (const char *)data, size, &b);
    met_merge_render(m, &out, &len);

    met_merge_t *again = met_merge_new();
    met_merge_add(again, NULL, out, len, &c);
    if (c.rejected != 0 || c.samples != a.samples + b.samples)
        abort();
    met_merge_render(again, &out2, &len2);
    if (len2 != len || memcmp(out, out2, len) != 0)
        abort();
    free(out);
    free(out2);
    met_merge_free(again);
    met_merge_free(m);
    return 0;
}

/*
 * fuzz_name_parse.c - fuzz target for the name normalizer and the address
 * and prefix parsers. Checks properties, not just crashes: a normalized name
 * normalizes to itself and passes name_check; a parsed address formats back
 * to exactly its input; a parsed prefix matches the address it came from.
 */
#include <stdlib.h>
#include <string.h>

#include "ron_naming.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    char out[NAME_MAX_LEN + 1], again[NAME_MAX_LEN + 1];
    name_err_t err;
    name_addr_t addr;
    name_addr_prefix_t prefix;

    if (name_normalize(s, size, out, &err) == 0) {
        if (name_normalize(out, strlen(out), again, &err) != 0 || strcmp(out, again) != 0)
            abort();
        if (name_check(out, strlen(out), &err) != 0 || strlen(out) > NAME_MAX_LEN)
            abort();
    } else if (err.msg[0] == '\0') {
        abort(); /* every rejection explains itself */
    }
    if (name_addr_parse(&addr, s, size, &err) == 0) {
        char text[NAME_ADDR_TEXT_LEN + 1];
        name_addr_format(&addr, text);
        if (size != NAME_ADDR_TEXT_LEN || memcmp(text, s, size) != 0)
            abort();
    }
    if (name_addr_prefix_parse(&prefix, s, size, &err) == 0) {
        name_addr_t a;
        memcpy(a.b, prefix.b, sizeof a.b);
        if (prefix.nibbles < 1 || prefix.nibbles > 64 || !name_addr_prefix_matches(&prefix, &a))
            abort();
    }
    return 0;
}

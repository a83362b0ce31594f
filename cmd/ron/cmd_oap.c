/*
 * cmd_oap.c - `ron oap decode` / `ron oap encode` (DESIGN.md §11): debugging
 * the wire. decode turns raw OAP/1 bytes on stdin into one JSON object per
 * frame; encode turns such objects (one per line) back into frames. Both run
 * the real codec, so they accept and refuse exactly what a node does.
 * Exit codes: 0 success, 1 I/O failure, 2 bad usage or bad input (a malformed
 * or incomplete frame, an invalid object).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "cmd.h"
#include "oap.h"
#include "ron_err.h"
#include "ron_util.h"

#define OAP_CMD_MAX_LINE ((size_t)4 * OAP_MAX_FRAME + 4096) /* hex doubles a 1 MiB frame */

static void
oap_usage(FILE *out)
{
    fprintf(out, "usage: ron oap decode [--max-frame N] < frames.bin\n"
                 "       ron oap encode < frames.jsonl > frames.bin\n"
                 "\n"
                 "decode reads raw OAP/1 bytes and prints one JSON object per frame:\n"
                 "  {\"len\",\"ver\",\"flags\",\"flag_names\",\"code\",\"app_proto_id\",\n"
                 "   \"tenant_id\" (32 hex),\"cap_len\",\"corr_id\" (decimal string),\n"
                 "   \"cap_hex\",\"payload_hex\"}\n"
                 "A malformed frame prints {\"error\":\"<slug>\"} and exits 2; bytes of an\n"
                 "incomplete trailing frame print {\"error\":\"incomplete\"} and exit 2.\n"
                 "COMP payloads are printed as sent (compressed).\n"
                 "\n"
                 "encode reads such objects, one per line (len, cap_len and flag_names\n"
                 "optional; when present they must agree), and writes the frames.\n"
                 "Exit codes: 0 success, 1 I/O error, 2 bad usage or bad input.\n");
}

static int
write_all(const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(STDOUT_FILENO, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void
print_hex_field(const char *name, const uint8_t *p, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    printf(",\"%s\":\"", name);
    for (size_t i = 0; i < n; i++) {
        putchar(digits[p[i] >> 4]);
        putchar(digits[p[i] & 15]);
    }
    putchar('"');
}

static void
print_frame(const oap_frame_t *f)
{
    char names[96];
    char tenant[33];

    oap_flag_names(f->flags, names, sizeof names);
    ron_hex_encode(tenant, f->tenant_id, sizeof f->tenant_id);
    printf("{\"len\":%u,\"ver\":%u,\"flags\":%u,\"flag_names\":\"%s\",\"code\":%u,"
           "\"app_proto_id\":%u,\"tenant_id\":\"%s\",\"cap_len\":%u,\"corr_id\":\"%llu\"",
           f->len, f->ver, f->flags, names, f->code, f->app_proto_id, tenant, f->cap_len,
           (unsigned long long)f->corr_id);
    print_hex_field("cap_hex", f->cap, f->cap_len);
    print_hex_field("payload_hex", f->payload, f->payload_len);
    printf("}\n");
}

static int
oap_decode(uint32_t max_frame)
{
    oap_decoder_t d;
    oap_frame_t f;
    size_t nframes = 0;
    bool eof = false;
    int rc = RON_EXIT_OK;

    oap_decoder_init(&d, max_frame);
    for (;;) {
        int r;
        while ((r = oap_decoder_next(&d, &f)) == 0) {
            print_frame(&f);
            nframes++;
        }
        if (r != RON_EAGAIN) {
            uint16_t status;
            const char *slug, *reason;
            oap_error_status(r, &status, &slug, &reason);
            printf("{\"error\":\"%s\"}\n", slug);
            fflush(stdout);
            rc = ron_cmd_fail(RON_EXIT_USAGE, "oap decode: frame %zu: %s", nframes + 1,
                              ron_strerror(r));
            goto out;
        }
        if (eof)
            break;
        size_t avail;
        uint8_t *p = oap_decoder_reserve(&d, OAP_CHUNK, &avail);
        if (p == NULL) { /* cannot happen: next() drained every whole frame */
            rc = ron_cmd_fail(RON_EXIT_FAIL, "oap decode: buffer full");
            goto out;
        }
        ssize_t n = read(STDIN_FILENO, p, avail);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = ron_cmd_fail(RON_EXIT_FAIL, "oap decode: read: %s", strerror(errno));
            goto out;
        }
        if (n == 0)
            eof = true;
        oap_decoder_commit(&d, (size_t)n);
    }
    if (d.end > d.start) {
        printf("{\"error\":\"incomplete\"}\n");
        fflush(stdout);
        rc = ron_cmd_fail(RON_EXIT_USAGE, "oap decode: %zu trailing bytes of an incomplete frame",
                          d.end - d.start);
    }
out:
    fflush(stdout);
    oap_decoder_close(&d);
    return rc;
}

/* ---- encode ---- */

static int
get_uint(json_t *o, const char *key, bool required, uint64_t max, uint64_t *v, bool *present,
         char *why, size_t why_len)
{
    json_t *j = json_object_get(o, key);
    if (present != NULL)
        *present = j != NULL;
    if (j == NULL) {
        if (required)
            snprintf(why, why_len, "field \"%s\": missing", key);
        return required ? RON_EINVAL : 0;
    }
    if (!json_is_integer(j) || json_integer_value(j) < 0 || (uint64_t)json_integer_value(j) > max) {
        snprintf(why, why_len, "field \"%s\": expected integer 0..%llu", key,
                 (unsigned long long)max);
        return RON_EINVAL;
    }
    *v = (uint64_t)json_integer_value(j);
    return 0;
}

/* Decode a hex string field into new memory. */
static int
get_hex(json_t *o, const char *key, uint8_t **out, size_t *out_len, size_t max, char *why,
        size_t why_len)
{
    json_t *j = json_object_get(o, key);
    *out = NULL;
    *out_len = 0;
    if (j == NULL || !json_is_string(j)) {
        snprintf(why, why_len, "field \"%s\": expected hex string", key);
        return RON_EINVAL;
    }
    size_t n = json_string_length(j);
    if (n % 2 != 0 || n / 2 > max) {
        snprintf(why, why_len, "field \"%s\": odd length or longer than %zu bytes", key, max);
        return RON_EINVAL;
    }
    *out = ron_xmalloc(n / 2 + 1);
    if (ron_hex_decode(*out, n / 2, json_string_value(j), n) < 0) {
        free(*out);
        *out = NULL;
        snprintf(why, why_len, "field \"%s\": not hex", key);
        return RON_EINVAL;
    }
    *out_len = n / 2;
    return 0;
}

/* Reject keys that are not fields of a decoded frame. */
static int
check_keys(json_t *o, char *why, size_t why_len)
{
    static const char *const keys[] = {"len",     "ver",          "flags",       "flag_names",
                                       "code",    "app_proto_id", "tenant_id",   "cap_len",
                                       "corr_id", "cap_hex",      "payload_hex", NULL};
    for (void *it = json_object_iter(o); it != NULL; it = json_object_iter_next(o, it)) {
        const char *k = json_object_iter_key(it);
        bool known = false;
        for (size_t i = 0; keys[i] != NULL && !known; i++)
            known = strcmp(k, keys[i]) == 0;
        if (!known) {
            snprintf(why, why_len, "field \"%s\": unknown", k);
            return RON_EINVAL;
        }
    }
    return 0;
}

/* Header fields of o into f: ver, flags, code, app_proto_id, tenant_id, corr_id. */
static int
header_from_object(json_t *o, oap_frame_t *f, char *why, size_t why_len)
{
    uint64_t v;
    json_t *j;

    if (get_uint(o, "ver", true, UINT16_MAX, &v, NULL, why, why_len) < 0)
        return RON_EINVAL;
    if (v != OAP_VERSION) {
        snprintf(why, why_len, "field \"ver\": only version 1 exists");
        return RON_EINVAL;
    }
    if (get_uint(o, "flags", true, UINT16_MAX, &v, NULL, why, why_len) < 0)
        return RON_EINVAL;
    f->flags = (uint16_t)v;
    if (get_uint(o, "code", true, UINT16_MAX, &v, NULL, why, why_len) < 0)
        return RON_EINVAL;
    f->code = (uint16_t)v;
    if (get_uint(o, "app_proto_id", true, UINT16_MAX, &v, NULL, why, why_len) < 0)
        return RON_EINVAL;
    f->app_proto_id = (uint16_t)v;
    j = json_object_get(o, "tenant_id");
    if (j == NULL || !json_is_string(j) || json_string_length(j) != 32 ||
        ron_hex_decode(f->tenant_id, 16, json_string_value(j), 32) < 0) {
        snprintf(why, why_len, "field \"tenant_id\": expected 32 hex digits");
        return RON_EINVAL;
    }
    j = json_object_get(o, "corr_id");
    if (j == NULL || !json_is_string(j) ||
        ron_parse_u64(json_string_value(j), json_string_length(j), &f->corr_id) < 0) {
        snprintf(why, why_len, "field \"corr_id\": expected decimal u64 string");
        return RON_EINVAL;
    }
    return 0;
}

/* The optional fields (len, cap_len, flag_names) must agree with f. */
static int
check_optional(json_t *o, const oap_frame_t *f, char *why, size_t why_len)
{
    uint64_t flen = 0, fcap_len = 0;
    bool has_len, has_cap_len;
    json_t *j;

    if (get_uint(o, "len", false, UINT32_MAX, &flen, &has_len, why, why_len) < 0 ||
        get_uint(o, "cap_len", false, UINT16_MAX, &fcap_len, &has_cap_len, why, why_len) < 0)
        return RON_EINVAL;
    if (has_len && flen != oap_frame_size(f)) {
        snprintf(why, why_len, "field \"len\": %llu but the frame is %zu bytes",
                 (unsigned long long)flen, oap_frame_size(f));
        return RON_EINVAL;
    }
    if (has_cap_len && fcap_len != f->cap_len) {
        snprintf(why, why_len, "field \"cap_len\": %llu but cap_hex holds %u bytes",
                 (unsigned long long)fcap_len, f->cap_len);
        return RON_EINVAL;
    }
    j = json_object_get(o, "flag_names");
    if (j != NULL) {
        uint16_t named;
        if (!json_is_string(j) || oap_flags_from_names(json_string_value(j), &named) < 0 ||
            named != f->flags) {
            snprintf(why, why_len, "field \"flag_names\": does not name flags %u", f->flags);
            return RON_EINVAL;
        }
    }
    return 0;
}

/* Parse one line into a frame and write it. Returns 0, RON_EINVAL (bad
 * input, why says which field) or -errno from write. */
static int
encode_line(const char *line, size_t len, char *why, size_t why_len)
{
    uint8_t *cap = NULL, *payload = NULL, *out = NULL;
    size_t cap_n, payload_n;
    json_error_t je;
    oap_frame_t f;
    json_t *o;
    ssize_t n;
    int rc = RON_EINVAL;

    memset(&f, 0, sizeof f);
    o = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
    if (o == NULL || !json_is_object(o)) {
        snprintf(why, why_len, "not a JSON object: %s", o == NULL ? je.text : "");
        goto out;
    }
    if (check_keys(o, why, why_len) < 0 || header_from_object(o, &f, why, why_len) < 0 ||
        get_hex(o, "cap_hex", &cap, &cap_n, OAP_MAX_CAP, why, why_len) < 0 ||
        get_hex(o, "payload_hex", &payload, &payload_n, OAP_MAX_FRAME, why, why_len) < 0)
        goto out;
    f.cap = cap;
    f.cap_len = (uint16_t)cap_n;
    f.payload = payload;
    f.payload_len = payload_n;
    if (check_optional(o, &f, why, why_len) < 0)
        goto out;
    out = ron_xmalloc(oap_frame_size(&f));
    n = oap_frame_encode(&f, OAP_MAX_FRAME, out, oap_frame_size(&f));
    if (n < 0) {
        snprintf(why, why_len, "frame refused: %s", ron_strerror((int)n));
        goto out;
    }
    rc = write_all(out, (size_t)n);
    if (rc < 0)
        snprintf(why, why_len, "write: %s", strerror(-rc));
out:
    json_decref(o);
    free(cap);
    free(payload);
    free(out);
    return rc;
}

static int
oap_encode(void)
{
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    ssize_t n;
    int rc = RON_EXIT_OK;

    while ((n = getline(&line, &cap, stdin)) > 0) {
        char why[256] = "";
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            n--;
        if (n == 0)
            continue;
        if ((size_t)n > OAP_CMD_MAX_LINE) {
            rc = ron_cmd_fail(RON_EXIT_USAGE, "oap encode: line %zu: longer than %zu bytes", lineno,
                              OAP_CMD_MAX_LINE);
            break;
        }
        int r = encode_line(line, (size_t)n, why, sizeof why);
        if (r < 0) {
            rc = ron_cmd_fail(r == RON_EINVAL ? RON_EXIT_USAGE : RON_EXIT_FAIL,
                              "oap encode: line %zu: %s", lineno, why);
            break;
        }
    }
    free(line);
    return rc;
}

int
cmd_oap(int argc, char **argv)
{
    uint32_t max_frame = OAP_MAX_FRAME;

    if (argc < 2) {
        oap_usage(stderr);
        return RON_EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        oap_usage(stdout);
        return RON_EXIT_OK;
    }
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            oap_usage(stdout);
            return RON_EXIT_OK;
        }
        if (strcmp(argv[1], "decode") == 0 && strcmp(argv[i], "--max-frame") == 0 && i + 1 < argc) {
            uint64_t v;
            if (ron_parse_u64(argv[i + 1], strlen(argv[i + 1]), &v) < 0 || v < OAP_MIN_MAX_FRAME ||
                v > OAP_MAX_FRAME)
                return ron_cmd_fail(RON_EXIT_USAGE, "oap: --max-frame must be %u..%u",
                                    OAP_MIN_MAX_FRAME, OAP_MAX_FRAME);
            max_frame = (uint32_t)v;
            i++;
            continue;
        }
        return ron_cmd_fail(RON_EXIT_USAGE, "oap: unexpected argument '%s' (see --help)", argv[i]);
    }
    if (strcmp(argv[1], "decode") == 0)
        return oap_decode(max_frame);
    if (strcmp(argv[1], "encode") == 0)
        return oap_encode();
    oap_usage(stderr);
    return RON_EXIT_USAGE;
}

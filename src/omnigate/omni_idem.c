/*
 * omni_idem.c - the app port's idempotency cache (app-port.md §3): answers
 * of pin/unpin/gc/publish requests that carried an `idem` key, by (tenant,
 * app, op, idem), for OMNI_IDEM_TTL_MS. A ring of OMNI_IDEM_ENTRIES slots:
 * a new answer overwrites the oldest, so memory is bounded by
 * OMNI_IDEM_ENTRIES * OMNI_MAX_ANSWER. Lookup is a linear scan of the ring
 * (a few microseconds at 4096 entries, once per keyed request).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "omni_internal.h"
#include "ron_util.h"

#define IDEM_KEY_MAX (32 + 1 + 5 + 1 + 3 + 1 + OMNI_MAX_IDEM + 1)

typedef struct {
    char key[IDEM_KEY_MAX]; /* "" = empty slot */
    uint64_t at_ms;
    uint16_t status;
    char *json;
    size_t len;
} idem_entry_t;

struct omni_idem {
    idem_entry_t *e; /* OMNI_IDEM_ENTRIES */
    size_t next;     /* slot the next answer overwrites (the oldest) */
};

static void
idem_key(char out[static IDEM_KEY_MAX], const uint8_t tenant[16], uint16_t app, omni_op_t op,
         const char *idem)
{
    char hex[33];
    for (size_t i = 0; i < 16; i++)
        snprintf(hex + 2 * i, 3, "%02x", tenant[i]);
    snprintf(out, IDEM_KEY_MAX, "%s/%u/%u/%s", hex, (unsigned)app, (unsigned)op, idem);
}

omni_idem_t *
omni__idem_new(void)
{
    omni_idem_t *c = ron_xcalloc(1, sizeof *c);
    c->e = ron_xcalloc(OMNI_IDEM_ENTRIES, sizeof *c->e);
    return c;
}

void
omni__idem_free(omni_idem_t *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < OMNI_IDEM_ENTRIES; i++)
        free(c->e[i].json);
    free(c->e);
    free(c);
}

uint16_t
omni__idem_get(omni_idem_t *c, const uint8_t tenant[16], uint16_t app, omni_op_t op,
               const char *idem, uint64_t now_ms, const char **json_out, size_t *len_out)
{
    char key[IDEM_KEY_MAX];

    idem_key(key, tenant, app, op, idem);
    for (size_t i = 0; i < OMNI_IDEM_ENTRIES; i++) {
        idem_entry_t *e = &c->e[i];
        if (e->key[0] == '\0' || strcmp(e->key, key) != 0)
            continue;
        if (now_ms - e->at_ms > OMNI_IDEM_TTL_MS)
            return 0;
        *json_out = e->json;
        *len_out = e->len;
        return e->status;
    }
    return 0;
}

void
omni__idem_put(omni_idem_t *c, const uint8_t tenant[16], uint16_t app, omni_op_t op,
               const char *idem, uint64_t now_ms, uint16_t status, const char *json, size_t len)
{
    idem_entry_t *e;
    char key[IDEM_KEY_MAX];

    if (len > OMNI_MAX_ANSWER)
        return;
    idem_key(key, tenant, app, op, idem);
    e = NULL;
    for (size_t i = 0; i < OMNI_IDEM_ENTRIES && e == NULL; i++)
        if (strcmp(c->e[i].key, key) == 0)
            e = &c->e[i]; /* a retry raced the first answer: overwrite in place */
    if (e == NULL) {
        e = &c->e[c->next];
        c->next = (c->next + 1) % OMNI_IDEM_ENTRIES;
    }
    free(e->json);
    snprintf(e->key, sizeof e->key, "%s", key);
    e->at_ms = now_ms;
    e->status = status;
    e->json = ron_xmalloc(len + 1);
    memcpy(e->json, json, len);
    e->json[len] = '\0';
    e->len = len;
}

/*
 * ron_config.c - what changes between two snapshots (ron_config_diff) and the
 * reload store with rollback: it keeps the sources (file name, the config
 * keys' RON_* variables, the flags) to rebuild from on reload, and adopts a
 * rebuilt snapshot only when every changed key is reloadable.
 * Invariants: a snapshot handed out by the store is never modified; a refused
 * or failed reload leaves the current snapshot in place. The schema is in
 * ron_config_schema.c, the sources in ron_config_load.c and ron_config_set.c,
 * the checks in ron_config_validate.c, the JSON form in ron_config_json.c.
 */
#include <stdlib.h>
#include <string.h>

#include "ron_config_internal.h"

/* ---- diff and JSON ---- */

static bool
key_equal(const cfg_key_t *k, const ron_config_t *a, const ron_config_t *b)
{
    const char *pa = (const char *)a + k->off, *pb = (const char *)b + k->off;
    switch (k->kind) {
    case CFG_K_STR:
    case CFG_K_PATH:
    case CFG_K_ADDR:
        return strcmp(pa, pb) == 0;
    case CFG_K_ENUM:
        if (k->off == CFG_OFF(profile))
            return a->profile == b->profile;
        return strcmp(pa, pb) == 0;
    case CFG_K_U64:
        return *(const uint64_t *)(const void *)pa == *(const uint64_t *)(const void *)pb;
    case CFG_K_BOOL:
        return ron_config_amnesia(a) == ron_config_amnesia(b) && a->amnesia_set == b->amnesia_set;
    case CFG_K_LIST: {
        size_t na = *(const size_t *)(const void *)((const char *)a + k->n_off);
        size_t nb = *(const size_t *)(const void *)((const char *)b + k->n_off);
        if (na != nb)
            return false;
        for (size_t i = 0; i < na; i++)
            if (strcmp(pa + i * k->cap, pb + i * k->cap) != 0)
                return false;
        return true;
    }
    }
    return false;
}

size_t
ron_config_diff(const ron_config_t *a, const ron_config_t *b, const char **first_out,
                const char **restart_only_out)
{
    size_t n = 0;
    if (first_out != NULL)
        *first_out = NULL;
    if (restart_only_out != NULL)
        *restart_only_out = NULL;
    for (size_t i = 0; i < cfg__n_keys; i++) {
        if (key_equal(&cfg__keys[i], a, b))
            continue;
        if (n++ == 0 && first_out != NULL)
            *first_out = cfg__keys[i].info.path;
        if (!cfg__keys[i].info.reloadable && restart_only_out != NULL && *restart_only_out == NULL)
            *restart_only_out = cfg__keys[i].info.path;
    }
    return n;
}

/* ---- the store ---- */

struct ron_config_store {
    char *file;               /* owned copy, or NULL */
    char **envp;              /* owned copies of the config keys' RON_* entries only */
    ron_config_kv_t *flags;   /* owned copies */
    size_t n_flags;
    ron_config_t *cur;        /* current snapshot */
};

/* Is entry "NAME=value" the variable of a config key? Only those are kept for
 * reloads: other RON_* variables may hold secrets (RON_PASSPHRASE, RON_CAP)
 * that must not be copied into the heap for the life of the node. */
static bool
env_is_config_key(const char *entry)
{
    if (strncmp(entry, "RON_", 4) != 0)
        return false;
    for (size_t i = 0; i < cfg__n_keys; i++) {
        char name[96];
        ron_config_env_name(cfg__keys[i].info.path, name, sizeof name);
        if (cfg__env_value(name, entry) != NULL)
            return true;
    }
    return false;
}

static ron_config_src_t
store_src(const ron_config_store_t *s)
{
    return (ron_config_src_t){s->file, s->envp, s->flags, s->n_flags};
}

int
ron_config_store_new(const ron_config_src_t *src, ron_config_store_t **store_out, char *err,
                     size_t cap)
{
    ron_config_store_t *s = ron_xcalloc(1, sizeof *s);
    ron_config_src_t copy;
    size_t n_env = 0, j = 0;
    int rc;

    s->file = src->file != NULL ? ron_xstrdup(src->file) : NULL;
    for (char *const *e = src->envp; e != NULL && *e != NULL; e++)
        n_env += env_is_config_key(*e);
    s->envp = ron_xcalloc(n_env + 1, sizeof *s->envp);
    for (char *const *e = src->envp; e != NULL && *e != NULL; e++)
        if (env_is_config_key(*e))
            s->envp[j++] = ron_xstrdup(*e);
    s->flags = ron_xcalloc(src->n_flags + 1, sizeof *s->flags);
    for (size_t i = 0; i < src->n_flags; i++) {
        s->flags[i].path = ron_xstrdup(src->flags[i].path);
        s->flags[i].value = ron_xstrdup(src->flags[i].value);
    }
    s->n_flags = src->n_flags;
    s->cur = ron_xmalloc(sizeof *s->cur);
    copy = store_src(s);
    rc = ron_config_build(&copy, s->cur, err, cap);
    if (rc < 0) {
        ron_config_store_free(s);
        return rc;
    }
    s->cur->version = 1;
    *store_out = s;
    return 0;
}

void
ron_config_store_free(ron_config_store_t *s)
{
    if (s == NULL)
        return;
    free(s->file);
    for (char **e = s->envp; e != NULL && *e != NULL; e++)
        free(*e);
    free(s->envp);
    for (size_t i = 0; i < s->n_flags; i++) {
        free((char *)s->flags[i].path);
        free((char *)s->flags[i].value);
    }
    free(s->flags);
    free(s->cur);
    free(s);
}

const ron_config_t *
ron_config_store_current(const ron_config_store_t *s)
{
    return s->cur;
}

int
ron_config_store_build(const ron_config_store_t *s, ron_config_t *next_out, char *err, size_t cap)
{
    ron_config_src_t src = store_src(s);
    return ron_config_build(&src, next_out, err, cap);
}

int
ron_config_store_adopt(ron_config_store_t *s, const ron_config_t *next, bool *changed_out,
                       char *err, size_t cap)
{
    const char *first, *restart_only;

    *changed_out = false;
    if (ron_config_diff(s->cur, next, &first, &restart_only) == 0)
        return 0;
    if (restart_only != NULL) {
        cfg__errf(err, cap, "key '%s' needs a restart; reload refused", restart_only);
        return RON_ECONFIG;
    }
    {
        ron_config_t *cur = ron_xmalloc(sizeof *cur);
        memcpy(cur, next, sizeof *cur);
        cur->version = s->cur->version + 1;
        free(s->cur); /* the old snapshot's views end here (documented) */
        s->cur = cur;
    }
    *changed_out = true;
    return 0;
}

int
ron_config_store_reload(ron_config_store_t *s, bool *changed_out, char *err, size_t cap)
{
    ron_config_t *next = ron_xmalloc(sizeof *next);
    int rc;

    *changed_out = false;
    rc = ron_config_store_build(s, next, err, cap);
    if (rc == 0)
        rc = ron_config_store_adopt(s, next, changed_out, err, cap);
    free(next);
    return rc;
}

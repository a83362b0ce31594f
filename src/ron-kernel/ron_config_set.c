/*
 * ron_config_set.c - setting one key from text (a flag or an environment
 * variable) or from a JSON value (a file or a snapshot), and applying a JSON
 * object key by key.
 * Invariant: every source ends in the same typed setters (set_string,
 * set_u64, set_enum, set_bool, list_add), so a value is checked against its
 * key's bounds the same way whether it came from a file, RON_* or --set.
 */
#include <stdio.h>
#include <string.h>

#include "ron_config_internal.h"

/* ---- setting one key ---- */

static int
set_string(const cfg_key_t *k, ron_config_t *cfg, const char *v, char *err, size_t cap)
{
    char *dst = (char *)cfg + k->off;
    if (strlen(v) >= k->cap) {
        cfg__errf(err, cap, "key '%s': value longer than %zu bytes", k->info.path, k->cap - 1);
        return RON_ECONFIG;
    }
    for (const char *p = v; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20) {
            cfg__errf(err, cap, "key '%s': control character in value", k->info.path);
            return RON_ECONFIG;
        }
    memset(dst, 0, k->cap);
    memcpy(dst, v, strlen(v) + 1);
    return 0;
}

static int
set_u64(const cfg_key_t *k, ron_config_t *cfg, uint64_t v, char *err, size_t cap)
{
    if (v < k->min || v > k->max) {
        cfg__errf(err, cap, "key '%s': %llu out of range [%llu, %llu]", k->info.path,
             (unsigned long long)v, (unsigned long long)k->min, (unsigned long long)k->max);
        return RON_ECONFIG;
    }
    *(uint64_t *)(void *)((char *)cfg + k->off) = v;
    return 0;
}

static int
set_enum(const cfg_key_t *k, ron_config_t *cfg, const char *v, char *err, size_t cap)
{
    for (size_t i = 0; k->choices[i] != NULL; i++) {
        if (strcmp(k->choices[i], v) != 0)
            continue;
        if (k->off == CFG_OFF(profile))
            cfg->profile = (ron_profile_t)i;
        else
            return set_string(k, cfg, v, err, cap);
        return 0;
    }
    cfg__errf(err, cap, "key '%s': '%s' is not one of the allowed values", k->info.path, v);
    return RON_ECONFIG;
}

static int
set_bool(const cfg_key_t *k, ron_config_t *cfg, bool v)
{
    (void)k;
    cfg->amnesia = v;
    cfg->amnesia_set = true;
    return 0;
}

static int
list_add(const cfg_key_t *k, ron_config_t *cfg, const char *v, size_t vlen, char *err, size_t cap)
{
    size_t *n = (size_t *)(void *)((char *)cfg + k->n_off);
    char *dst;
    if (*n >= k->max_n) {
        cfg__errf(err, cap, "key '%s': more than %zu entries", k->info.path, k->max_n);
        return RON_ECONFIG;
    }
    if (vlen == 0 || vlen >= k->cap) {
        cfg__errf(err, cap, "key '%s': entry empty or longer than %zu bytes", k->info.path, k->cap - 1);
        return RON_ECONFIG;
    }
    dst = (char *)cfg + k->off + *n * k->cap;
    memset(dst, 0, k->cap);
    memcpy(dst, v, vlen);
    (*n)++;
    return 0;
}

static void
list_clear(const cfg_key_t *k, ron_config_t *cfg)
{
    *(size_t *)(void *)((char *)cfg + k->n_off) = 0;
    memset((char *)cfg + k->off, 0, k->cap * k->max_n);
}

int
ron_config_set(ron_config_t *cfg, const char *path, const char *value, char *err, size_t cap)
{
    const cfg_key_t *k = cfg__key_find(path);
    uint64_t u;
    if (k == NULL) {
        cfg__errf(err, cap, "unknown key '%s'", path);
        return RON_ECONFIG;
    }
    switch (k->kind) {
    case CFG_K_STR:
    case CFG_K_PATH:
    case CFG_K_ADDR:
        return set_string(k, cfg, value, err, cap);
    case CFG_K_ENUM:
        return set_enum(k, cfg, value, err, cap);
    case CFG_K_U64:
        if (ron_parse_u64(value, strlen(value), &u) < 0) {
            cfg__errf(err, cap, "key '%s': '%s' is not an unsigned integer", path, value);
            return RON_ECONFIG;
        }
        return set_u64(k, cfg, u, err, cap);
    case CFG_K_BOOL:
        if (strcmp(value, "true") == 0 || strcmp(value, "1") == 0)
            return set_bool(k, cfg, true);
        if (strcmp(value, "false") == 0 || strcmp(value, "0") == 0)
            return set_bool(k, cfg, false);
        cfg__errf(err, cap, "key '%s': '%s' is not a boolean (true/false/1/0)", path, value);
        return RON_ECONFIG;
    case CFG_K_LIST: {
        list_clear(k, cfg);
        const char *p = value;
        while (*p != '\0') {
            const char *c = strchr(p, ',');
            size_t n = c != NULL ? (size_t)(c - p) : strlen(p);
            int rc = list_add(k, cfg, p, n, err, cap);
            if (rc < 0)
                return rc;
            p += n;
            if (*p == ',')
                p++;
        }
        return 0;
    }
    }
    return RON_ECONFIG;
}

/* Set key k from a JSON value, checking its JSON type. */
static int
cfg_set_json(ron_config_t *cfg, const cfg_key_t *k, json_t *v, char *err, size_t cap)
{
    switch (k->kind) {
    case CFG_K_STR:
    case CFG_K_PATH:
    case CFG_K_ADDR:
    case CFG_K_ENUM:
        if (!json_is_string(v))
            goto wrong;
        return k->kind == CFG_K_ENUM ? set_enum(k, cfg, json_string_value(v), err, cap)
                                 : set_string(k, cfg, json_string_value(v), err, cap);
    case CFG_K_U64:
        if (!json_is_integer(v))
            goto wrong;
        if (json_integer_value(v) < 0) {
            cfg__errf(err, cap, "key '%s': negative value", k->info.path);
            return RON_ECONFIG;
        }
        return set_u64(k, cfg, (uint64_t)json_integer_value(v), err, cap);
    case CFG_K_BOOL:
        if (!json_is_boolean(v))
            goto wrong;
        return set_bool(k, cfg, json_is_true(v));
    case CFG_K_LIST: {
        size_t i;
        json_t *e;
        if (!json_is_array(v))
            goto wrong;
        list_clear(k, cfg);
        json_array_foreach(v, i, e) {
            int rc;
            if (!json_is_string(e)) {
                cfg__errf(err, cap, "key '%s': entry %zu is not a string", k->info.path, i);
                return RON_ECONFIG;
            }
            rc = list_add(k, cfg, json_string_value(e), strlen(json_string_value(e)), err, cap);
            if (rc < 0)
                return rc;
        }
        return 0;
    }
    }
wrong:
    cfg__errf(err, cap, "key '%s': expected %s", k->info.path,
         k->kind == CFG_K_U64 ? "an integer" : k->kind == CFG_K_BOOL ? "a boolean"
                                       : k->kind == CFG_K_LIST ? "an array of strings"
                                                           : "a string");
    return RON_ECONFIG;
}

/* Apply a JSON object whose keys live under prefix ("" for the top). */
int
cfg__apply_object(ron_config_t *cfg, json_t *obj, const char *prefix, bool allow_version,
                 char *err, size_t cap)
{
    const char *name;
    json_t *v;
    json_object_foreach(obj, name, v) {
        char path[128];
        const cfg_key_t *k;
        int rc;
        if (snprintf(path, sizeof path, "%s%s%s", prefix, prefix[0] ? "." : "", name) >=
            (int)sizeof path) {
            cfg__errf(err, cap, "unknown key '%.64s...'", path);
            return RON_ECONFIG;
        }
        if (allow_version && prefix[0] == '\0' && strcmp(name, "version") == 0)
            continue;
        k = cfg__key_find(path);
        if (k != NULL) {
            rc = cfg_set_json(cfg, k, v, err, cap);
        } else if (cfg__key_is_section(path)) {
            if (!json_is_object(v)) {
                cfg__errf(err, cap, "key '%s': expected an object", path);
                return RON_ECONFIG;
            }
            rc = cfg__apply_object(cfg, v, path, false, err, cap);
        } else {
            cfg__errf(err, cap, "unknown key '%s'", path);
            return RON_ECONFIG;
        }
        if (rc < 0)
            return rc;
    }
    return 0;
}

/*
 * ron_config_json.c - a snapshot as JSON and back: the form the kernel hands
 * its children (sections for dotted keys, a decimal "version") and the form
 * `ron config show` prints.
 * Invariant: ron_config_from_json(ron_config_to_json(c)) gives back c; the
 * way back goes through the same setters and validation as a config file.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ron_config_internal.h"

/* Find or create the object for a dotted path's section inside root. */
static json_t *
json_section(json_t *root, const char *path, const char **leaf_out)
{
    const char *dot = strchr(path, '.');
    json_t *sec;
    char name[64];
    if (dot == NULL) {
        *leaf_out = path;
        return root;
    }
    snprintf(name, sizeof name, "%.*s", (int)(dot - path), path);
    sec = json_object_get(root, name);
    if (sec == NULL) {
        sec = json_object();
        json_object_set_new(root, name, sec);
    }
    *leaf_out = dot + 1;
    return sec;
}

char *
ron_config_to_json(const ron_config_t *cfg)
{
    json_t *root = json_object();
    char ver[24];
    char *out;

    snprintf(ver, sizeof ver, "%llu", (unsigned long long)cfg->version);
    json_object_set_new(root, "version", json_string(ver));
    for (size_t i = 0; i < cfg__n_keys; i++) {
        const cfg_key_t *k = &cfg__keys[i];
        const char *p = (const char *)cfg + k->off, *leaf;
        json_t *sec = json_section(root, k->info.path, &leaf), *v = NULL;
        switch (k->kind) {
        case CFG_K_STR:
        case CFG_K_PATH:
        case CFG_K_ADDR:
            v = json_string(p);
            break;
        case CFG_K_ENUM:
            v = json_string(k->off == CFG_OFF(profile) ? k->choices[cfg->profile] : p);
            break;
        case CFG_K_U64:
            v = json_integer((json_int_t) * (const uint64_t *)(const void *)p);
            break;
        case CFG_K_BOOL:
            if (cfg->amnesia_set)
                v = json_boolean(cfg->amnesia);
            break;
        case CFG_K_LIST: {
            size_t n = *(const size_t *)(const void *)((const char *)cfg + k->n_off);
            v = json_array();
            for (size_t j = 0; j < n; j++)
                json_array_append_new(v, json_string(p + j * k->cap));
            break;
        }
        }
        if (v != NULL)
            json_object_set_new(sec, leaf, v);
    }
    out = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(root);
    if (out == NULL)
        abort(); /* jansson fails only on OOM */
    return out;
}

int
ron_config_from_json(const char *json, size_t len, ron_config_t *cfg_out, char *err, size_t cap)
{
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr), *ver;
    ron_config_t *cfg = ron_xmalloc(sizeof *cfg);
    uint64_t v = 0;
    int rc;

    ron_config_defaults(cfg);
    if (root == NULL || !json_is_object(root)) {
        cfg__errf(err, cap, "config snapshot: %s", root == NULL ? jerr.text : "not an object");
        rc = RON_EJSON;
        goto out;
    }
    ver = json_object_get(root, "version");
    if (ver == NULL || !json_is_string(ver) ||
        ron_parse_u64(json_string_value(ver), strlen(json_string_value(ver)), &v) < 0) {
        cfg__errf(err, cap, "config snapshot: key 'version': expected a decimal string");
        rc = RON_ECONFIG;
        goto out;
    }
    if ((rc = cfg__apply_object(cfg, root, "", true, err, cap)) < 0)
        goto out;
    if ((rc = ron_config_validate(cfg, err, cap)) < 0)
        goto out;
    cfg->version = v;
    memcpy(cfg_out, cfg, sizeof *cfg);
out:
    json_decref(root);
    free(cfg);
    return rc;
}

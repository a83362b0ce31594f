/*
 * ron_config_internal.h - what the ron_config*.c files share and nothing else
 * includes: the key schema (one cfg_key_t per key: its kind, where it lives
 * in ron_config_t, its bounds), the table itself, and the cfg__ helpers one
 * file calls in another (error text, key lookup, applying a JSON object).
 * Invariant: cfg__keys is the only list of keys; the file, environment, flag,
 * validation, diff and JSON code all walk it, so a key added there is known
 * to every source and every check.
 */
#ifndef RON_CONFIG_INTERNAL_H
#define RON_CONFIG_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ron_config.h"
#include "ron_err.h"
#include "ron_kernel.h"
#include "ron_util.h"

typedef enum {
    CFG_K_STR,  /* free text */
    CFG_K_PATH, /* filesystem path */
    CFG_K_ADDR, /* host:port, may be empty when opt */
    CFG_K_U64,  /* integer in [min, max] */
    CFG_K_BOOL,
    CFG_K_ENUM, /* one of choices */
    CFG_K_LIST, /* list of names or seeds */
} cfg_kind_t;

typedef struct {
    ron_config_key_info_t info;
    cfg_kind_t kind;
    size_t off;   /* offset in ron_config_t */
    size_t cap;   /* bytes of a string field, or of one list element */
    size_t max_n; /* list: element count bound */
    size_t n_off; /* list: offset of the count */
    uint64_t min, max;
    bool opt; /* string/address may be empty */
    const char *const *choices;
} cfg_key_t;

#define CFG_OFF(f) offsetof(ron_config_t, f)

extern const cfg_key_t cfg__keys[];
extern const size_t cfg__n_keys;

/* Format into err (cap bytes; nothing when err is NULL or cap 0). */
void cfg__errf(char *err, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The key whose dotted path is path, or NULL. */
const cfg_key_t *cfg__key_find(const char *path);
/* The value in entry ("NAME=value") when NAME is name (a key's RON_* name
 * from ron_config_env_name), else NULL. Returns a view into entry. */
const char *cfg__env_value(const char *name, const char *entry);
/* Is prefix (e.g. "admin_limits") the object part of some key path? */
bool cfg__key_is_section(const char *prefix);
/* Apply a JSON object whose keys live under prefix ("" for the top); a
 * top-level "version" is skipped when allow_version. Borrows obj. Returns 0
 * or RON_ECONFIG with the reason in err. */
int cfg__apply_object(ron_config_t *cfg, json_t *obj, const char *prefix, bool allow_version,
                      char *err, size_t cap);
/* Apply a strict JSON config file. Returns 0, RON_ETOOBIG, RON_ECONFIG or -errno. */
int cfg__load_file(ron_config_t *cfg, const char *file, char *err, size_t cap);
/* Apply the RON_* variables of envp (NULL: none). Returns 0 or RON_ECONFIG. */
int cfg__load_env(ron_config_t *cfg, char *const *envp, char *err, size_t cap);

#endif /* RON_CONFIG_INTERNAL_H */

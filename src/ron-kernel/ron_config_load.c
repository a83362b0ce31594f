/*
 * ron_config_load.c - building a snapshot from its sources, in order of
 * precedence: defaults, then the JSON config file, then RON_* environment
 * variables, then command-line flags, then validation.
 * Invariant: the file is read whole under RON_CONFIG_FILE_MAX and parsed
 * strictly (duplicate keys and unknown keys are errors); a failed build
 * leaves the caller's snapshot untouched.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ron_config_internal.h"

int
cfg__load_file(ron_config_t *cfg, const char *file, char *err, size_t cap)
{
    char *buf = NULL;
    json_t *root = NULL;
    json_error_t jerr;
    struct stat st;
    ssize_t got = 0;
    int fd = -1, rc = 0;

    fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) < 0) {
        rc = -errno;
        cfg__errf(err, cap, "config file %s: %s", file, strerror(errno));
        goto out;
    }
    if (st.st_size > RON_CONFIG_FILE_MAX) {
        rc = RON_ETOOBIG;
        cfg__errf(err, cap, "config file %s: larger than %d bytes", file, RON_CONFIG_FILE_MAX);
        goto out;
    }
    buf = ron_xmalloc((size_t)st.st_size + 1);
    while (got < st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)(st.st_size - got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = n < 0 ? -errno : RON_ECONFIG;
            cfg__errf(err, cap, "config file %s: short read", file);
            goto out;
        }
        got += n;
    }
    root = json_loadb(buf, (size_t)got, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        rc = RON_ECONFIG;
        cfg__errf(err, cap, "config file %s: line %d: %s", file, jerr.line, jerr.text);
        goto out;
    }
    if (!json_is_object(root)) {
        rc = RON_ECONFIG;
        cfg__errf(err, cap, "config file %s: top level must be an object", file);
        goto out;
    }
    {
        char kerr[RON_CONFIG_ERR_MAX];
        rc = cfg__apply_object(cfg, root, "", false, kerr, sizeof kerr);
        if (rc < 0)
            cfg__errf(err, cap, "config file %s: %s", file, kerr);
    }
out:
    json_decref(root);
    free(buf);
    if (fd >= 0)
        close(fd);
    return rc;
}

int
cfg__load_env(ron_config_t *cfg, char *const *envp, char *err, size_t cap)
{
    if (envp == NULL)
        return 0;
    for (size_t i = 0; i < cfg__n_keys; i++) {
        char name[96];
        ron_config_env_name(cfg__keys[i].info.path, name, sizeof name);
        for (char *const *e = envp; *e != NULL; e++) {
            char kerr[RON_CONFIG_ERR_MAX];
            const char *value = cfg__env_value(name, *e);
            int rc;
            if (value == NULL)
                continue;
            rc = ron_config_set(cfg, cfg__keys[i].info.path, value, kerr, sizeof kerr);
            if (rc < 0) {
                cfg__errf(err, cap, "environment %s: %s", name, kerr);
                return rc;
            }
        }
    }
    return 0;
}

int
ron_config_build(const ron_config_src_t *src, ron_config_t *cfg_out, char *err, size_t cap)
{
    ron_config_t *cfg = ron_xmalloc(sizeof *cfg);
    int rc;

    ron_config_defaults(cfg);
    if (src->file != NULL && (rc = cfg__load_file(cfg, src->file, err, cap)) < 0)
        goto out;
    if ((rc = cfg__load_env(cfg, src->envp, err, cap)) < 0)
        goto out;
    for (size_t i = 0; i < src->n_flags; i++) {
        char kerr[RON_CONFIG_ERR_MAX];
        rc = ron_config_set(cfg, src->flags[i].path, src->flags[i].value, kerr, sizeof kerr);
        if (rc < 0) {
            cfg__errf(err, cap, "command line: %s", kerr);
            goto out;
        }
    }
    if ((rc = ron_config_validate(cfg, err, cap)) < 0)
        goto out;
    memcpy(cfg_out, cfg, sizeof *cfg);
out:
    free(cfg);
    return rc;
}

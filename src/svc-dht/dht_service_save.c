/*
 * dht_service_save.c - the routing table file of the DHT node service:
 * written atomically (temp file, fsync, rename, fsync of the directory) at
 * most every DHT_SVC_SAVE_MS and at stop, only when it changed and is not
 * empty; read at start, where a malformed file or another node's is
 * ignored with a warning (the seeds still work). Never in amnesia.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dht_service_internal.h"
#include "ron_fs.h"
#include "ron_log.h"
#include "ron_util.h"

void
dht__svc_save(dht_service_t *s, bool force)
{
    uint8_t *blob;
    ssize_t n;
    char tmp[4200];
    int fd = -1;

    if (s->table_path == NULL || (!force && ron_now_ms() < s->next_save))
        return;
    s->next_save = ron_now_ms() + DHT_SVC_SAVE_MS;
    blob = ron_xmalloc(DHT_SAVE_MAX);
    n = dht_table_save(s->dht, blob, DHT_SAVE_MAX);
    if (n < 0 || dht_table_size(s->dht) == 0 ||
        ((size_t)n == s->saved_len && memcmp(blob, s->saved, (size_t)n) == 0)) {
        free(blob);
        return; /* unchanged, or nothing worth keeping */
    }
    snprintf(tmp, sizeof tmp, "%s.tmp", s->table_path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, blob, (size_t)n) != n || fsync(fd) < 0 || close(fd) < 0 ||
        rename(tmp, s->table_path) < 0) {
        ron_warn("dht: cannot save the routing table to %s: %s", s->table_path, strerror(errno));
        if (fd >= 0)
            (void)unlink(tmp);
        free(blob);
        return;
    }
    {
        char dir[4200];
        char *slash;
        snprintf(dir, sizeof dir, "%s", s->table_path);
        slash = strrchr(dir, '/');
        if (slash != NULL) {
            *slash = '\0';
            (void)ron_fsync_dir(dir);
        }
    }
    free(s->saved);
    s->saved = blob;
    s->saved_len = (size_t)n;
}

void
dht__svc_load(dht_service_t *s)
{
    uint8_t *blob;
    ssize_t n;
    int fd, rc;

    if (s->table_path == NULL)
        return;
    fd = open(s->table_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    blob = ron_xmalloc(DHT_SAVE_MAX + 1);
    n = read(fd, blob, DHT_SAVE_MAX + 1);
    close(fd);
    if (n < 0 || (size_t)n > DHT_SAVE_MAX ||
        (rc = dht_table_load(s->dht, blob, (size_t)n, ron_now_ms())) < 0) {
        ron_warn("dht: routing table %s not loaded (%s); starting from the seeds", s->table_path,
                 n < 0 ? strerror(errno) : "malformed or another node's");
        free(blob);
        return;
    }
    ron_info("dht: loaded %zu contacts from %s", dht_table_size(s->dht), s->table_path);
    s->saved = blob;
    s->saved_len = (size_t)n;
}

/*
 * rbus_dir.c - ron-bus setup outside the loop: the private socket directory,
 * the per-boot secret, and reading both from the environment a kernel gives
 * its children. The directory is created by mkdtemp (mode 0700) so sockets
 * in it are reachable only by its owner (and root); sun_path's 108 bytes are
 * checked here once, so later socket paths cannot overflow.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "rbus_internal.h"
#include "ron_err.h"
#include "ron_util.h"

/* "/ron-<uid>-XXXXXX" is at most 5 + 10 + 7 = 22 bytes. */
#define RBUS_DIR_SUFFIX_MAX 22u

static bool
dir_fits(const char *dir_or_base, size_t extra)
{
    char path[RBUS_MAX_PATH];
    char name[RBUS_MAX_NAME];

    memset(name, 'x', RBUS_MAX_NAME - 1);
    name[RBUS_MAX_NAME - 1] = '\0';
    return strlen(dir_or_base) + extra < RBUS_MAX_DIR &&
           snprintf(path, sizeof path, "%s%*s/%s.sock", dir_or_base, (int)extra, "", name) <
               (int)sizeof path;
}

/* Where bus directories live: $XDG_RUNTIME_DIR when usable, else /tmp. */
static const char *
dir_base(void)
{
    const char *base = getenv("XDG_RUNTIME_DIR");

    if (base == NULL || base[0] != '/' || !dir_fits(base, RBUS_DIR_SUFFIX_MAX))
        base = "/tmp";
    return base;
}

int
rbus_dir_create(char *out, size_t cap)
{
    const char *base = dir_base();
    char tmpl[RBUS_MAX_DIR];

    if (!dir_fits(base, RBUS_DIR_SUFFIX_MAX) || cap < RBUS_MAX_DIR)
        return RON_EPATHLEN;
    snprintf(tmpl, sizeof tmpl, "%s/ron-%u-XXXXXX", base, (unsigned)getuid());
    if (mkdtemp(tmpl) == NULL)
        return -errno;
    if (chmod(tmpl, 0700) < 0) { /* mkdtemp already uses 0700; defensive against odd libcs */
        int rc = -errno;
        rmdir(tmpl);
        return rc;
    }
    memcpy(out, tmpl, strlen(tmpl) + 1);
    return 0;
}

void
rbus_dir_remove(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[RBUS_MAX_PATH + RBUS_MAX_NAME];

    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n > 5 && strcmp(e->d_name + n - 5, ".sock") == 0 &&
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name) < (int)sizeof path)
            unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

/* 1 when something listens on the socket at path (a connect is accepted or
 * queued); 0 when it is refused or gone. */
static bool
sock_alive(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd, rc;

    if (strlen(path) >= sizeof sa.sun_path)
        return true; /* cannot tell: keep it */
    memcpy(sa.sun_path, path, strlen(path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return true;
    rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    rc = rc == 0 || (errno != ECONNREFUSED && errno != ENOENT);
    close(fd);
    return rc;
}

/* 1 when dir (a bus directory of ours) has a listening socket. */
static bool
dir_alive(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[RBUS_MAX_PATH + RBUS_MAX_NAME];
    bool alive = false;

    if (d == NULL)
        return true;
    while (!alive && (e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n > 5 && strcmp(e->d_name + n - 5, ".sock") == 0 &&
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name) < (int)sizeof path)
            alive = sock_alive(path);
    }
    closedir(d);
    return alive;
}

int
rbus_dir_sweep_stale(unsigned min_age_s)
{
    const char *base = dir_base();
    char prefix[24], path[RBUS_MAX_DIR + 8];
    DIR *d = opendir(base);
    struct dirent *e;
    struct stat st;
    size_t plen;
    int removed = 0;
    time_t now = time(NULL);

    if (d == NULL)
        return 0;
    snprintf(prefix, sizeof prefix, "ron-%u-", (unsigned)getuid());
    plen = strlen(prefix);
    while ((e = readdir(d)) != NULL && removed < (int)RBUS_DIR_SWEEP_MAX) {
        if (strncmp(e->d_name, prefix, plen) != 0 || strlen(e->d_name) != plen + 6 ||
            snprintf(path, sizeof path, "%s/%s", base, e->d_name) >= (int)sizeof path)
            continue;
        /* ours, a real directory, quiet for min_age_s, and nothing in it listens */
        if (lstat(path, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != getuid() ||
            now - st.st_mtime < (time_t)min_age_s || dir_alive(path))
            continue;
        rbus_dir_remove(path);
        removed += access(path, F_OK) < 0;
    }
    closedir(d);
    return removed;
}

int
rbus_secret_generate(uint8_t secret_out[static RBUS_SECRET_LEN])
{
    return ron_random_bytes(secret_out, RBUS_SECRET_LEN);
}

void
rbus_secret_hex(const uint8_t secret[static RBUS_SECRET_LEN], char out[static 2 * RBUS_SECRET_LEN + 1])
{
    ron_hex_encode(out, secret, RBUS_SECRET_LEN);
}

int
rbus_config_from_env(rbus_config_t *cfg, const char *name)
{
    const char *dir = getenv(RBUS_ENV_DIR);
    char *hex = getenv(RBUS_ENV_SECRET);
    int rc;

    memset(cfg, 0, sizeof *cfg);
    if (dir == NULL || dir[0] != '/' || strlen(dir) >= RBUS_MAX_DIR || hex == NULL ||
        strlen(hex) != (size_t)2 * RBUS_SECRET_LEN)
        return RON_ECONFIG;
    rc = ron_hex_decode(cfg->secret, RBUS_SECRET_LEN, hex, strlen(hex));
    if (rc < 0)
        return RON_ECONFIG;
    memset(hex, '0', strlen(hex)); /* wipe the copy in our environment block */
    unsetenv(RBUS_ENV_SECRET);
    cfg->transport = RBUS_TRANSPORT_UNIX;
    cfg->dir = dir;
    cfg->name = name;
    return 0;
}

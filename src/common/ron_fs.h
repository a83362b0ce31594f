/*
 * ron_fs.h - the few filesystem steps every durable writer repeats: private
 * directories (mode 0700) and directory fsync after a rename. Blocking:
 * worker threads or start-up only.
 */
#ifndef RON_FS_H
#define RON_FS_H

/* Create directory path with mode 0700; an existing one is fine.
 * Returns 0 or -errno. */
int ron_mkdir_private(const char *path);

/* Create every missing component of path with mode 0700 (mkdir -p).
 * Returns 0, -ENAMETOOLONG for paths over 4095 bytes, or -errno. */
int ron_mkdir_p(const char *path);

/* fsync the directory at path, so renames and creations in it are durable.
 * Returns 0 or -errno. */
int ron_fsync_dir(const char *path);

#endif

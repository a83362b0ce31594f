/*
 * sto_partial.c - partial objects: the pieces of an object fetched from peers
 * so far, kept verified, so a get can be served from them before the whole
 * object has arrived and a fetch cut short resumes where it stopped (DESIGN.md
 * §4). Layout and crash ordering: docs/protocol/storage-format.md, "Partial
 * objects".
 *
 * A partial object is the object file to be (header, bytes, outboard) plus a
 * bitmap of verified pieces. Nothing unverified enters it: a piece is stored
 * only after its proof folds to the address (sto_tree_proof_nodes), and the
 * outboard nodes on its path, authenticated by that fold, are filled in at
 * the same time. Serving from a file partial re-verifies every piece against
 * those nodes, so bits that outlived their bytes (an OS crash) only cost a
 * refetch; a RAM partial's pieces are served as they verified on arrival.
 * Completion verifies once more, against the filled outboard, every piece
 * this handle did not store itself (its bit came from the map on disk: an
 * earlier process, whose bytes an OS crash may have lost), which also
 * authenticates every outboard node those pieces rely on (each half of a node
 * is the sibling of the pieces under the other half); a piece stored through
 * this handle's descriptor verified on arrival and wrote its path's nodes
 * from that fold, and the page cache returns what this process wrote, so
 * reading and hashing it again would only repeat the same check. Then the
 * file is committed exactly like a cache put, which never reads its bytes
 * back either (header, fdatasync of bytes and outboard, rename, index). So a
 * crash leaves a usable partial or nothing, never a complete object with
 * unverified bytes; a committed object's reads verify every piece as always.
 *
 * I/O per stored piece (file): one pwrite of the bytes, one per outboard node
 * this handle has not written yet (about one per piece over a whole object:
 * the nodes a piece shares with earlier ones are skipped), one for its map
 * bit. Verification reads nodes from an in-memory copy of the outboard
 * (objects up to PARTIAL_OB_MIRROR_MAX outboard bytes), not a pread per node.
 * Every PARTIAL_WRITEBACK_STEP bytes stored, the file's writeback is started
 * (sync_file_range WRITE: no wait, no durability claim), so the disk writes
 * while the rest arrives; left to the kernel, a GiB stays dirty in the page
 * cache until the commit's fdatasync and the whole disk write comes after the
 * transfer. The commit's fdatasync is still what makes the bytes durable.
 *
 * Concurrency: the store's registry (s->partials, under s->lock) holds one
 * sto_partial_t per address with a count of handles; each partial has its
 * own mutex for its bitmap and writes.
 */
#include <dirent.h>
#include <stdatomic.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "ron_err.h"
#include "ron_fs.h"
#include "ron_log.h"
#include "ron_util.h"
#include "sto_internal.h"

#define MAP_MAGIC "RONPART1"
#define MAP_HDR_LEN 64u
/* A file partial keeps a copy of its outboard in memory for verification when
 * the outboard is at most this large (an object of up to 16 GiB); above it
 * every node is read from the file. */
#define PARTIAL_OB_MIRROR_MAX ((size_t)16 << 20)
/* Bytes a file partial stores between two starts of its writeback. */
#define PARTIAL_WRITEBACK_STEP ((uint64_t)8 << 20)

struct sto_partial {
    sto_partial_t *next;      /* in s->partials */
    sto_store_t *s;
    uint8_t addr[STO_ADDR_LEN];
    uint64_t size, npieces, have;
    uint8_t *bits;            /* ceil(npieces / 8) bytes */
    uint64_t last_used_us;    /* eviction order of idle RAM partials */
    int refs;                 /* open handles (under s->lock) */
    atomic_bool gone;         /* completed or dropped: handles only wait to close (read
                                 under either lock, so atomic) */
    pthread_mutex_t mu;       /* bits, have, writes */
    /* file */
    int fd, map_fd;
    char *path, *map_path;
    uint8_t *fresh;           /* pieces stored through this handle's fd (bits) */
    uint8_t *ob_set;          /* outboard nodes written through this fd (bits, one per node) */
    uint8_t *obm;             /* the outboard in memory (NULL until first needed, or too big) */
    uint64_t unflushed;       /* bytes stored since the writeback was last started */
    /* RAM */
    uint8_t *data;            /* size bytes (a buffer of data_cap, sto__ram_buf_grow) */
    size_t data_cap;
    uint8_t *ob;              /* outboard (ob_len bytes, nodes filled as pieces verify) */
    size_t ob_len;
};

/* ---- helpers ---- */

static size_t
bits_len(uint64_t npieces)
{
    return (size_t)((npieces + 7) / 8);
}

static bool
bit_in(const uint8_t *bits, uint64_t i)
{
    return (bits[i / 8] >> (i % 8)) & 1u;
}

static bool
bit_get(const sto_partial_t *p, uint64_t i)
{
    return bit_in(p->bits, i);
}

static int
pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
    const uint8_t *b = buf;
    size_t done = 0;

    while (done < len) {
        ssize_t n = pwrite(fd, b + done, len - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        done += (size_t)n;
    }
    return 0;
}

static int
pread_all(int fd, void *buf, size_t len, uint64_t off)
{
    uint8_t *b = buf;
    size_t done = 0;

    while (done < len) {
        ssize_t n = pread(fd, b + done, len - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return RON_EDIGEST; /* shorter than its size */
        done += (size_t)n;
    }
    return 0;
}

static char *
partial_path(const sto_store_t *s, const uint8_t *addr, const char *suffix)
{
    char hex[68];
    size_t n;
    char *p;

    sto_addr_format(addr, hex);
    n = strlen(s->dir) + 80;
    p = ron_xmalloc(n);
    snprintf(p, n, "%s/partial/%s%s", s->dir, hex + 3, suffix);
    return p;
}

/* Set or clear bit i in memory and (file) in the map. p->mu held. */
static int
bit_set(sto_partial_t *p, uint64_t i, bool on)
{
    uint8_t b = p->bits[i / 8];

    if (on == bit_get(p, i))
        return 0;
    if (on)
        b |= (uint8_t)(1u << (i % 8));
    else
        b &= (uint8_t)~(1u << (i % 8));
    p->bits[i / 8] = b;
    if (on) {
        p->have++;
    } else {
        p->have--;
        p->fresh[i / 8] &= (uint8_t)~(1u << (i % 8));
    }
    if (p->fd < 0)
        return 0;
    return pwrite_all(p->map_fd, &b, 1, MAP_HDR_LEN + i / 8);
}

/* The in-memory outboard of a file partial, read from the file the first
 * time (a new partial's file is all zeros, so is its copy); NULL when it is
 * above PARTIAL_OB_MIRROR_MAX or cannot be read (nodes are read from the
 * file then). p->mu held. */
static uint8_t *
obm_get(sto_partial_t *p)
{
    if (p->obm != NULL || p->ob_len > PARTIAL_OB_MIRROR_MAX)
        return p->obm;
    p->obm = ron_xmalloc(p->ob_len + 1);
    if (pread_all(p->fd, p->obm, p->ob_len, STO_OBJ_HDR_LEN + p->size) < 0) {
        free(p->obm);
        p->obm = NULL;
    }
    return p->obm;
}

static void
partial_free(sto_partial_t *p)
{
    if (p == NULL)
        return;
    if (p->fd >= 0)
        close(p->fd);
    if (p->map_fd >= 0)
        close(p->map_fd);
    free(p->path);
    free(p->map_path);
    free(p->fresh);
    free(p->ob_set);
    free(p->obm);
    sto__ram_buf_free(p->data, p->data_cap);
    free(p->ob);
    free(p->bits);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

static sto_partial_t *
partial_alloc(sto_store_t *s, const uint8_t *addr, uint64_t size)
{
    sto_partial_t *p = ron_xcalloc(1, sizeof *p);

    p->s = s;
    memcpy(p->addr, addr, STO_ADDR_LEN);
    p->size = size;
    p->npieces = sto_tree_pieces(size);
    p->bits = ron_xcalloc(bits_len(p->npieces) + 1, 1);
    p->fresh = ron_xcalloc(bits_len(p->npieces) + 1, 1);
    p->ob_len = (size_t)sto_tree_outboard_len(size);
    p->ob_set = ron_xcalloc(bits_len(p->ob_len / STO_TREE_NODE_LEN) + 1, 1);
    p->fd = p->map_fd = -1;
    atomic_init(&p->gone, false);
    pthread_mutex_init(&p->mu, NULL);
    return p;
}

/* Registry lookup. s->lock held. */
static sto_partial_t *
reg_find(sto_store_t *s, const uint8_t *addr)
{
    for (sto_partial_t *p = s->partials; p != NULL; p = p->next)
        if (!p->gone && memcmp(p->addr, addr, STO_ADDR_LEN) == 0)
            return p;
    return NULL;
}

static void
reg_remove(sto_store_t *s, sto_partial_t *p)
{
    for (sto_partial_t **pp = &s->partials; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            return;
        }
    }
}

/* Decode a map header; 0 when it names addr with a plausible size. */
static int
map_hdr_decode(const uint8_t *h, const uint8_t *addr, uint64_t max_object, uint64_t *size_out)
{
    static const uint8_t zero[MAP_HDR_LEN - 48];

    if (memcmp(h, MAP_MAGIC, 8) != 0 || memcmp(h + 16, addr, STO_ADDR_LEN) != 0 ||
        memcmp(h + 48, zero, sizeof zero) != 0)
        return RON_EDIGEST;
    *size_out = sto__get_le64(h + 8);
    return *size_out <= max_object ? 0 : RON_EDIGEST;
}

/* Load the file partial of addr from disk. s->lock held. Returns 0,
 * RON_ENOTFOUND, or RON_EDIGEST / -errno (the pair is then removed). */
static int
file_load(sto_store_t *s, const uint8_t *addr, sto_partial_t **out)
{
    char *path = partial_path(s, addr, ""), *map_path = partial_path(s, addr, ".map");
    uint8_t hdr[MAP_HDR_LEN];
    struct stat st;
    sto_partial_t *p = NULL;
    uint64_t size;
    int fd = -1, mfd = -1, rc;

    fd = open(path, O_RDWR | O_CLOEXEC);
    mfd = open(map_path, O_RDWR | O_CLOEXEC);
    if (fd < 0 && mfd < 0) {
        rc = RON_ENOTFOUND;
        goto out;
    }
    if (fd < 0 || mfd < 0 || pread_all(mfd, hdr, sizeof hdr, 0) < 0 ||
        map_hdr_decode(hdr, addr, s->max_object, &size) < 0 || fstat(fd, &st) < 0 ||
        (uint64_t)st.st_size != sto__obj_file_len(size)) {
        rc = RON_EDIGEST;
        goto out;
    }
    p = partial_alloc(s, addr, size);
    if ((rc = pread_all(mfd, p->bits, bits_len(p->npieces), MAP_HDR_LEN)) < 0)
        goto out;
    for (uint64_t i = 0; i < p->npieces; i++)
        p->have += bit_get(p, i);
    p->fd = fd;
    p->map_fd = mfd;
    p->path = path;
    p->map_path = map_path;
    fd = mfd = -1;
    path = map_path = NULL;
    *out = p;
    p = NULL;
    rc = 0;
out:
    if (rc == RON_EDIGEST || (rc < 0 && rc != RON_ENOTFOUND)) {
        ron_warn("svc-storage: dropping a malformed partial object (%s)", ron_strerror(rc));
        unlink(path);
        unlink(map_path);
        rc = RON_ENOTFOUND;
    }
    if (fd >= 0)
        close(fd);
    if (mfd >= 0)
        close(mfd);
    free(path);
    free(map_path);
    partial_free(p);
    return rc;
}

/* Create the file pair of a new partial: data file of the final length
 * (sparse), then the map with a zero bitmap. s->lock held. */
static int
file_create(sto_partial_t *p)
{
    sto_store_t *s = p->s;
    uint8_t hdr[MAP_HDR_LEN] = {0};
    int rc;

    p->path = partial_path(s, p->addr, "");
    p->map_path = partial_path(s, p->addr, ".map");
    unlink(p->path);
    unlink(p->map_path);
    p->fd = open(p->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (p->fd < 0)
        return -errno;
    if (ftruncate(p->fd, (off_t)sto__obj_file_len(p->size)) < 0)
        return -errno;
    p->map_fd = open(p->map_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (p->map_fd < 0)
        return -errno;
    memcpy(hdr, MAP_MAGIC, 8);
    sto__put_le64(hdr + 8, p->size);
    memcpy(hdr + 16, p->addr, STO_ADDR_LEN);
    if ((rc = pwrite_all(p->map_fd, hdr, sizeof hdr, 0)) < 0 ||
        (rc = pwrite_all(p->map_fd, p->bits, bits_len(p->npieces), MAP_HDR_LEN)) < 0)
        return rc;
    return 0;
}

/* Delete a partial's storage. s->lock held. */
static void
partial_drop(sto_partial_t *p)
{
    sto_store_t *s = p->s;

    if (p->path != NULL)
        unlink(p->path);
    if (p->map_path != NULL)
        unlink(p->map_path);
    if (s->partial_bytes >= p->size)
        s->partial_bytes -= p->size;
    p->gone = true;
    reg_remove(s, p);
}

/* Write the verified nodes of a piece of a file partial. p->mu held. */
static int
piece_nodes_store(sto_partial_t *p, const uint8_t *nodes, const uint64_t *offs, size_t n)
{
    int rc;

    for (size_t k = 0; k < n; k++) {
        /* a node this fd wrote already holds these very bytes (both came out
         * of a fold up to the address); one from an earlier process is written
         * again, since an OS crash may have lost it */
        uint64_t node = offs[k] / STO_TREE_NODE_LEN;
        uint8_t m = (uint8_t)(1u << (node % 8));
        if (p->ob_set[node / 8] & m)
            continue;
        if ((rc = pwrite_all(p->fd, nodes + k * STO_TREE_NODE_LEN, STO_TREE_NODE_LEN,
                             STO_OBJ_HDR_LEN + p->size + offs[k])) < 0)
            return rc;
        p->ob_set[node / 8] |= m;
        if (p->obm != NULL)
            memcpy(p->obm + offs[k], nodes + k * STO_TREE_NODE_LEN, STO_TREE_NODE_LEN);
    }
    return 0;
}

/* Store verified bytes and nodes of piece i. p->mu held. */
static int
piece_store(sto_partial_t *p, uint64_t i, const uint8_t *bytes, size_t len,
            const uint8_t *nodes, const uint64_t *offs, size_t n)
{
    int rc;

    if (p->fd < 0) {
        sto_put_t view = {.buf = p->data, .cap = p->data_cap};
        sto__ram_buf_populate(&view, (size_t)(i * STO_PIECE_LEN), len);
        memcpy(p->data + i * STO_PIECE_LEN, bytes, len);
        for (size_t k = 0; k < n; k++)
            memcpy(p->ob + offs[k], nodes + k * STO_TREE_NODE_LEN, STO_TREE_NODE_LEN);
        return bit_set(p, i, true);
    }
    if ((rc = pwrite_all(p->fd, bytes, len, STO_OBJ_HDR_LEN + i * STO_PIECE_LEN)) < 0)
        return rc;
    if ((rc = piece_nodes_store(p, nodes, offs, n)) < 0)
        return rc;
    /* the bit last: a kill -9 before it leaves the piece absent, never claimed */
    if ((rc = bit_set(p, i, true)) == 0) {
        p->fresh[i / 8] |= (uint8_t)(1u << (i % 8));
        p->unflushed += len;
    }
    return rc;
}

static int
ob_read(void *arg, uint64_t off, uint8_t *buf, size_t len)
{
    sto_partial_t *p = arg;
    int rc = 0;

    if (off > p->ob_len || len > p->ob_len - off)
        return RON_EDIGEST;
    pthread_mutex_lock(&p->mu);
    if (p->fd >= 0) {
        const uint8_t *m = obm_get(p);
        if (m != NULL)
            memcpy(buf, m + off, len);
        pthread_mutex_unlock(&p->mu);
        return m != NULL ? 0 : pread_all(p->fd, buf, len, STO_OBJ_HDR_LEN + p->size + off);
    }
    if (p->ob == NULL)
        rc = RON_ENOTFOUND; /* completed: the store holds the outboard now */
    else
        memcpy(buf, p->ob + off, len);
    pthread_mutex_unlock(&p->mu);
    return rc;
}

/* ---- API ---- */

int
sto_partial_open(sto_store_t *s, const uint8_t addr[static STO_ADDR_LEN], sto_partial_t **p_out)
{
    sto_partial_t *p;
    int rc = 0;

    *p_out = NULL;
    if (s->read_only)
        return RON_ENOTFOUND;
    pthread_mutex_lock(&s->lock);
    p = reg_find(s, addr);
    if (p == NULL && !s->ram) {
        rc = file_load(s, addr, &p);
        if (rc == 0) {
            p->next = s->partials;
            s->partials = p;
        }
    } else if (p == NULL) {
        rc = RON_ENOTFOUND;
    }
    if (rc == 0) {
        p->refs++;
        p->last_used_us = sto__now_us();
        *p_out = p;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int
sto_partial_create(sto_store_t *s, const uint8_t addr[static STO_ADDR_LEN], uint64_t size,
                   const uint8_t *last, size_t last_len, const uint8_t *proof, size_t proof_len,
                   sto_partial_t **p_out)
{
    uint8_t nodes[STO_TREE_MAX_DEPTH * STO_TREE_NODE_LEN];
    uint64_t offs[STO_TREE_MAX_DEPTH], freed;
    sto_partial_t *p = NULL;
    sto__totals_t t;
    size_t n;
    int rc;

    *p_out = NULL;
    if (s->read_only)
        return RON_EINVAL;
    if (size > s->max_object)
        return RON_ETOOBIG;
    /* the last piece binds the size: nothing is allocated for a lie */
    rc = sto_tree_proof_nodes(addr, size, sto_tree_pieces(size) - 1, last, last_len, proof,
                              proof_len, nodes, offs, &n);
    if (rc < 0)
        return rc;
    if ((rc = sto_has(s, addr)) != 0)
        return rc > 0 ? -EEXIST : rc;
    if ((rc = sto_partial_open(s, addr, &p)) == 0) {
        if (p->size != size) { /* cannot happen: the size was verified both times */
            sto_partial_close(p);
            return RON_EDIGEST;
        }
        goto add;
    }
    pthread_mutex_lock(&s->lock);
    if ((p = reg_find(s, addr)) != NULL) { /* created meanwhile */
        p->refs++;
        pthread_mutex_unlock(&s->lock);
        goto add;
    }
    if (s->quota != 0) {
        if (s->ram) {
            t = s->ram_totals;
        } else if ((rc = sto__file_totals(s, &t)) < 0) {
            pthread_mutex_unlock(&s->lock);
            return rc;
        }
        if (t.pinned_bytes + size > s->quota) {
            pthread_mutex_unlock(&s->lock);
            return RON_ESTOREFULL;
        }
        if (t.stored_bytes + s->partial_bytes + size > s->quota)
            (void)sto__gc_locked(s, s->quota - size, &freed);
    }
    p = partial_alloc(s, addr, size);
    if (s->ram) {
        sto_put_t tmp = {.s = s, .declared = size > 0 ? size : 1};
        /* not populated here: under s->lock, a GiB of fresh pages stalled every
         * other store job for seconds; each piece populates its own pages as
         * it lands (piece_store), on the worker that stores it */
        sto__ram_buf_grow(&tmp, (size_t)(size > 0 ? size : 1));
        p->data = tmp.buf;
        p->data_cap = tmp.cap;
        p->ob_len = (size_t)sto_tree_outboard_len(size);
        p->ob = ron_xcalloc(p->ob_len + 1, 1);
    } else if ((rc = file_create(p)) < 0) {
        if (p->path != NULL)
            unlink(p->path);
        if (p->map_path != NULL)
            unlink(p->map_path);
        pthread_mutex_unlock(&s->lock);
        partial_free(p);
        return rc;
    }
    p->ob_len = (size_t)sto_tree_outboard_len(size);
    p->refs = 1;
    p->last_used_us = sto__now_us();
    p->next = s->partials;
    s->partials = p;
    s->partial_bytes += size;
    pthread_mutex_unlock(&s->lock);
add:
    pthread_mutex_lock(&p->mu);
    rc = bit_get(p, p->npieces - 1)
             ? 0
             : piece_store(p, p->npieces - 1, last, last_len, nodes, offs, n);
    pthread_mutex_unlock(&p->mu);
    if (rc < 0) {
        sto_partial_close(p);
        return rc;
    }
    *p_out = p;
    return 0;
}

uint64_t
sto_partial_size(const sto_partial_t *p)
{
    return p->size;
}

int
sto_partial_piece_add(sto_partial_t *p, uint64_t piece, const uint8_t *bytes, size_t len,
                      const uint8_t *proof, size_t proof_len)
{
    return sto_partial_piece_add_cv(p, piece, bytes, len, NULL, proof, proof_len);
}

int
sto_partial_piece_add_cv(sto_partial_t *p, uint64_t piece, const uint8_t *bytes, size_t len,
                         const uint8_t *cv, const uint8_t *proof, size_t proof_len)
{
    uint8_t nodes[STO_TREE_MAX_DEPTH * STO_TREE_NODE_LEN];
    uint64_t offs[STO_TREE_MAX_DEPTH];
    bool kick;
    size_t n;
    int rc;

    if (piece >= p->npieces)
        return RON_EINVAL;
    pthread_mutex_lock(&p->mu);
    rc = bit_get(p, piece) ? 1 : 0;
    pthread_mutex_unlock(&p->mu);
    if (rc == 1)
        return 1;
    /* hash outside the lock: pieces of one object verify in parallel; a cv
     * computed in this node from these bytes is folded to the address alone */
    if (cv != NULL && p->npieces > 1 && len == sto_tree_piece_len(p->size, piece))
        rc = sto_tree_proof_nodes_cv(p->addr, p->size, piece, cv, proof, proof_len, nodes, offs,
                                     &n);
    else
        rc = sto_tree_proof_nodes(p->addr, p->size, piece, bytes, len, proof, proof_len, nodes,
                                  offs, &n);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&p->mu);
    if (p->gone)
        rc = RON_ENOTFOUND;
    else if (bit_get(p, piece))
        rc = 1;
    else
        rc = piece_store(p, piece, bytes, len, nodes, offs, n);
    kick = p->fd >= 0 && p->unflushed >= PARTIAL_WRITEBACK_STEP;
    if (kick)
        p->unflushed = 0;
    pthread_mutex_unlock(&p->mu);
    /* outside the lock (it may wait for the disk's queue); the fd stays open
     * while this handle does. Best effort: the commit's fdatasync decides. */
    if (kick)
        (void)sync_file_range(p->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
    return rc;
}

/* pwritev until every byte of iov[0..cnt) is written (iov is consumed). */
static int
pwritev_all(int fd, struct iovec *iov, int cnt, uint64_t off)
{
    while (cnt > 0) {
        ssize_t n = pwritev(fd, iov, cnt, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        off += (uint64_t)n;
        while (cnt > 0 && (size_t)n >= iov->iov_len) {
            n -= (ssize_t)iov->iov_len;
            iov++;
            cnt--;
        }
        if (cnt > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + n;
            iov->iov_len -= (size_t)n;
        }
    }
    return 0;
}

/*
 * Store in[a..b) of a file partial: consecutive pieces, verified, absent,
 * all but the last whole. Their bytes go in one pwritev and their nodes
 * next; the map bits last, in one write, so a kill -9 before it leaves
 * them absent, never claimed. p->mu held.
 */
static int
run_store(sto_partial_t *p, const sto_piece_in_t *in, size_t a, size_t b, const uint8_t *nodes,
          const uint64_t *offs, const size_t *nn)
{
    struct iovec iov[STO_PARTIAL_BATCH_MAX];
    uint64_t first = in[a].piece, last = in[b - 1].piece;
    int rc;

    for (size_t k = a; k < b; k++)
        iov[k - a] = (struct iovec){.iov_base = (void *)(uintptr_t)in[k].bytes, .iov_len = in[k].len};
    if ((rc = pwritev_all(p->fd, iov, (int)(b - a), STO_OBJ_HDR_LEN + first * STO_PIECE_LEN)) < 0)
        return rc;
    for (size_t k = a; k < b; k++)
        if ((rc = piece_nodes_store(p, nodes + k * STO_TREE_MAX_DEPTH * STO_TREE_NODE_LEN,
                                    offs + k * STO_TREE_MAX_DEPTH, nn[k])) < 0)
            return rc;
    for (size_t k = a; k < b; k++) {
        uint64_t i = in[k].piece;
        p->bits[i / 8] |= (uint8_t)(1u << (i % 8));
        p->fresh[i / 8] |= (uint8_t)(1u << (i % 8));
        p->have++;
        p->unflushed += in[k].len;
    }
    return pwrite_all(p->map_fd, p->bits + first / 8, (size_t)(last / 8 - first / 8 + 1),
                      MAP_HDR_LEN + first / 8);
}

int
sto_partial_pieces_add(sto_partial_t *p, const sto_piece_in_t *in, size_t n, int *rc_out)
{
    size_t nn[STO_PARTIAL_BATCH_MAX];
    uint8_t *nodes;
    uint64_t *offs;
    bool kick;
    size_t a, b;
    int rc;

    if (n == 0 || n > STO_PARTIAL_BATCH_MAX)
        return RON_EINVAL;
    nodes = ron_xmalloc(n * STO_TREE_MAX_DEPTH * STO_TREE_NODE_LEN);
    offs = ron_xmalloc(n * STO_TREE_MAX_DEPTH * sizeof *offs);
    /* verify each outside the lock, as sto_partial_piece_add_cv does */
    for (size_t k = 0; k < n; k++) {
        const sto_piece_in_t *x = &in[k];
        uint8_t *nk = nodes + k * STO_TREE_MAX_DEPTH * STO_TREE_NODE_LEN;
        uint64_t *ok = offs + k * STO_TREE_MAX_DEPTH;
        nn[k] = 0;
        if (x->piece >= p->npieces) {
            rc_out[k] = RON_EINVAL;
            continue;
        }
        pthread_mutex_lock(&p->mu);
        rc = bit_get(p, x->piece) ? 1 : 0;
        pthread_mutex_unlock(&p->mu);
        if (rc == 0 && x->cv != NULL && p->npieces > 1 &&
            x->len == sto_tree_piece_len(p->size, x->piece))
            rc = sto_tree_proof_nodes_cv(p->addr, p->size, x->piece, x->cv, x->proof,
                                         x->proof_len, nk, ok, &nn[k]);
        else if (rc == 0)
            rc = sto_tree_proof_nodes(p->addr, p->size, x->piece, x->bytes, x->len, x->proof,
                                      x->proof_len, nk, ok, &nn[k]);
        rc_out[k] = rc;
    }
    pthread_mutex_lock(&p->mu);
    for (a = 0; a < n; a = b) {
        b = a + 1;
        if (rc_out[a] != 0)
            continue;
        if (p->gone) {
            rc_out[a] = RON_ENOTFOUND;
            continue;
        }
        if (bit_get(p, in[a].piece)) {
            rc_out[a] = 1;
            continue;
        }
        if (p->fd < 0) {
            rc_out[a] = piece_store(p, in[a].piece, in[a].bytes, in[a].len,
                                    nodes + a * STO_TREE_MAX_DEPTH * STO_TREE_NODE_LEN,
                                    offs + a * STO_TREE_MAX_DEPTH, nn[a]);
            continue;
        }
        while (b < n && rc_out[b] == 0 && in[b].piece == in[b - 1].piece + 1 &&
               in[b - 1].len == STO_PIECE_LEN && !bit_get(p, in[b].piece))
            b++;
        rc = run_store(p, in, a, b, nodes, offs, nn);
        for (size_t k = a; k < b; k++)
            rc_out[k] = rc;
    }
    kick = p->fd >= 0 && p->unflushed >= PARTIAL_WRITEBACK_STEP;
    if (kick)
        p->unflushed = 0;
    pthread_mutex_unlock(&p->mu);
    if (kick) /* as in sto_partial_piece_add_cv */
        (void)sync_file_range(p->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
    free(offs);
    free(nodes);
    return 0;
}

bool
sto_partial_piece_has(sto_partial_t *p, uint64_t piece)
{
    bool has;

    if (piece >= p->npieces)
        return false;
    pthread_mutex_lock(&p->mu);
    has = bit_get(p, piece);
    pthread_mutex_unlock(&p->mu);
    return has;
}

uint64_t
sto_partial_verified(sto_partial_t *p)
{
    uint64_t bytes;

    pthread_mutex_lock(&p->mu);
    bytes = p->have * STO_PIECE_LEN;
    if (bit_get(p, p->npieces - 1))
        bytes = bytes - STO_PIECE_LEN + sto_tree_piece_len(p->size, p->npieces - 1);
    pthread_mutex_unlock(&p->mu);
    return bytes;
}

/* Forget piece i of a file partial, lost or damaged since it verified, so it
 * is fetched again. */
static void
piece_forget(sto_partial_t *p, uint64_t i)
{
    sto__corruption(p->s, p->addr, i, "partial object piece does not verify");
    pthread_mutex_lock(&p->mu);
    (void)bit_set(p, i, false);
    pthread_mutex_unlock(&p->mu);
}

/* Read the whole pieces first.. covering span bytes at their object offset
 * into buf (one pread) and verify them as a batch against the outboard.
 * Returns 0, or RON_EDIGEST after forgetting the first bad piece, or -errno. */
static int
file_span_read(sto_partial_t *p, uint64_t first, uint8_t *buf, size_t span)
{
    uint64_t bad = first;
    int rc = pread_all(p->fd, buf, span, STO_OBJ_HDR_LEN + first * STO_PIECE_LEN);

    if (rc == 0)
        rc = sto_tree_range_verify_fn(p->addr, p->size, ob_read, p, first, buf, span, &bad);
    if (rc == RON_EDIGEST)
        piece_forget(p, bad);
    return rc;
}

ssize_t
sto_partial_read(sto_partial_t *p, uint64_t off, void *buf, size_t len)
{
    uint8_t *out = buf, *piece = NULL;
    uint64_t end, pos, first, span_end;
    int rc = 0;

    if (off >= p->size || len == 0)
        return 0;
    end = p->size - off < len ? p->size : off + len;
    first = off / STO_PIECE_LEN;
    for (uint64_t i = first; i <= (end - 1) / STO_PIECE_LEN; i++)
        if (!sto_partial_piece_has(p, i))
            return RON_EAGAIN;
    if (p->fd >= 0) {
        /* a file partial's bytes may have outlived a crash unverified: check
         * them again, the whole range in one read and one batched hash (straight
         * into buf when it starts and ends on piece boundaries) */
        span_end = ((end - 1) / STO_PIECE_LEN + 1) * STO_PIECE_LEN;
        if (span_end > p->size)
            span_end = p->size;
        if (off % STO_PIECE_LEN == 0 && end == span_end) {
            rc = file_span_read(p, first, out, (size_t)(end - off));
        } else {
            piece = ron_xmalloc((size_t)(span_end - first * STO_PIECE_LEN));
            rc = file_span_read(p, first, piece, (size_t)(span_end - first * STO_PIECE_LEN));
            if (rc == 0)
                memcpy(out, piece + (off - first * STO_PIECE_LEN), (size_t)(end - off));
        }
        goto out;
    }
    /* a RAM partial's bytes never left this process since they verified
     * against the address on arrival (its bit is set after) */
    for (pos = off; pos < end;) {
        uint64_t i = pos / STO_PIECE_LEN, pstart = i * STO_PIECE_LEN;
        size_t plen = sto_tree_piece_len(p->size, i);
        uint64_t take = pstart + plen < end ? pstart + plen - pos : end - pos;
        pthread_mutex_lock(&p->mu);
        if (p->data == NULL)
            rc = RON_ENOTFOUND; /* completed meanwhile: read the object */
        else
            memcpy(out + (pos - off), p->data + pos, (size_t)take);
        pthread_mutex_unlock(&p->mu);
        if (rc < 0)
            goto out;
        pos += take;
    }
out:
    free(piece);
    return rc < 0 ? rc : (ssize_t)(end - off);
}

/* Verify against the filled outboard every piece this handle did not store
 * (its bit came from the map on disk), clearing the bits of pieces that fail.
 * Returns 0 or RON_EDIGEST / -errno. */
static int
file_verify_all(sto_partial_t *p)
{
    const uint64_t batch = 16;
    uint8_t *fresh = ron_xmalloc(bits_len(p->npieces) + 1);
    uint8_t *buf = NULL;
    uint64_t i = 0;
    int rc = 0;

    pthread_mutex_lock(&p->mu);
    memcpy(fresh, p->fresh, bits_len(p->npieces) + 1);
    pthread_mutex_unlock(&p->mu);
    while (i < p->npieces && rc == 0) {
        uint64_t cnt = 0, start, end;
        if (bit_in(fresh, i)) {
            i++;
            continue;
        }
        while (cnt < batch && i + cnt < p->npieces && !bit_in(fresh, i + cnt))
            cnt++;
        start = i * STO_PIECE_LEN;
        end = (i + cnt) * STO_PIECE_LEN < p->size ? (i + cnt) * STO_PIECE_LEN : p->size;
        if (buf == NULL)
            buf = ron_xmalloc(batch * STO_PIECE_LEN);
        rc = file_span_read(p, i, buf, (size_t)(end - start));
        i += cnt;
    }
    free(buf);
    free(fresh);
    return rc;
}

int
sto_partial_complete(sto_partial_t *p)
{
    sto_store_t *s = p->s;
    sto_put_t put;
    int rc;

    pthread_mutex_lock(&p->mu);
    rc = p->gone ? RON_ENOTFOUND : p->have < p->npieces ? RON_EAGAIN : 0;
    pthread_mutex_unlock(&p->mu);
    if (rc < 0)
        return rc;
    if (p->size == 0) {
        rc = sto_tree_piece_verify(p->addr, 0, p->ob, 0, 0, NULL, 0);
    } else if (p->fd >= 0) {
        rc = file_verify_all(p);
    }
    if (rc < 0)
        return rc;
    memset(&put, 0, sizeof put);
    put.s = s;
    put.len = p->size;
    put.fd = put.ob_fd = -1;
    if (p->fd >= 0) {
        put.fd = put.ob_fd = p->fd;
        put.tmp_data = ron_xstrdup(p->path);
        rc = sto__file_commit(&put, p->addr);
        free(put.tmp_data); /* NULL once renamed */
    } else {
        /* no reader copies out of the buffers while the store takes them */
        pthread_mutex_lock(&p->mu);
        put.buf = p->data;
        put.cap = p->data_cap;
        put.ob = p->ob;
        put.ob_written = p->ob_len;
        rc = sto__ram_commit(&put, p->addr);
        if (rc == 0) {
            /* taken by the store; or ours to free when the object was there already */
            sto__ram_buf_free(put.buf, put.cap);
            free(put.ob);
            p->data = NULL;
            p->ob = NULL;
            p->data_cap = 0;
        }
        pthread_mutex_unlock(&p->mu);
    }
    if (rc < 0)
        return rc;
    if (p->path != NULL && access(p->path, F_OK) == 0)
        unlink(p->path); /* the object was stored already: this copy is surplus */
    pthread_mutex_lock(&p->mu);
    p->gone = true;
    pthread_mutex_unlock(&p->mu);
    pthread_mutex_lock(&s->lock);
    free(p->path);
    p->path = NULL;
    partial_drop(p);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

void
sto_partial_close(sto_partial_t *p)
{
    sto_store_t *s;
    bool free_it;

    if (p == NULL)
        return;
    s = p->s;
    pthread_mutex_lock(&s->lock);
    p->refs--;
    p->last_used_us = sto__now_us();
    /* a file partial lives on disk while idle; a RAM one stays registered */
    free_it = p->refs == 0 && (p->gone || !s->ram);
    if (free_it && !p->gone)
        reg_remove(s, p);
    pthread_mutex_unlock(&s->lock);
    if (free_it)
        partial_free(p);
}

int
sto_partial_stat(sto_store_t *s, const uint8_t addr[static STO_ADDR_LEN], uint64_t *size_out,
                 uint64_t *verified_out)
{
    sto_partial_t *p;
    int rc = sto_partial_open(s, addr, &p);

    if (rc < 0)
        return rc;
    *size_out = p->size;
    *verified_out = sto_partial_verified(p);
    sto_partial_close(p);
    return 0;
}

/* ---- store hooks (sto_store.c, sto_file.c) ---- */

/* Evict idle partials, oldest first, until stored + partial bytes <= target
 * or none is idle. s->lock held. */
uint64_t
sto__partial_evict(sto_store_t *s, uint64_t stored, uint64_t target)
{
    uint64_t freed = 0;

    if (s->ram) {
        while (stored + s->partial_bytes > target) {
            sto_partial_t *best = NULL;
            for (sto_partial_t *p = s->partials; p != NULL; p = p->next)
                if (p->refs == 0 && (best == NULL || p->last_used_us < best->last_used_us))
                    best = p;
            if (best == NULL)
                break;
            freed += best->size;
            partial_drop(best);
            partial_free(best);
        }
        return freed;
    }
    /* file: idle partials are the map files of unregistered addresses */
    char *dir_path = ron_xmalloc(strlen(s->dir) + 16);
    sprintf(dir_path, "%s/partial", s->dir);
    DIR *d = opendir(dir_path);
    struct dirent *e;
    while (d != NULL && stored + s->partial_bytes > target && (e = readdir(d)) != NULL) {
        uint8_t addr[STO_ADDR_LEN];
        sto_partial_t *p;
        size_t nl = strlen(e->d_name);
        if (nl != 64 + 4 || strcmp(e->d_name + 64, ".map") != 0)
            continue;
        char hex[65];
        memcpy(hex, e->d_name, 64);
        hex[64] = '\0';
        if (sto_addr_parse(hex, addr) < 0 || reg_find(s, addr) != NULL)
            continue;
        if (file_load(s, addr, &p) < 0)
            continue;
        freed += p->size;
        partial_drop(p);
        partial_free(p);
    }
    if (d != NULL)
        closedir(d);
    free(dir_path);
    return freed;
}

/* Writable file store open: create partial/, drop malformed pairs and
 * partials of objects already stored, and count partial bytes. */
int
sto__partial_recover(sto_store_t *s)
{
    char *dir_path = ron_xmalloc(strlen(s->dir) + 16);
    DIR *d;
    struct dirent *e;
    int rc, dropped = 0;

    sprintf(dir_path, "%s/partial", s->dir);
    if ((rc = ron_mkdir_private(dir_path)) < 0)
        goto out;
    d = opendir(dir_path);
    if (d == NULL) {
        rc = -errno;
        goto out;
    }
    while ((e = readdir(d)) != NULL) {
        uint8_t addr[STO_ADDR_LEN];
        char hex[65];
        sto_partial_t *p;
        size_t nl = strlen(e->d_name);
        if (e->d_name[0] == '.')
            continue;
        if ((nl != 64 && !(nl == 68 && strcmp(e->d_name + 64, ".map") == 0))) {
            unlinkat(dirfd(d), e->d_name, 0);
            dropped++;
            continue;
        }
        memcpy(hex, e->d_name, 64);
        hex[64] = '\0';
        if (sto_addr_parse(hex, addr) < 0) {
            unlinkat(dirfd(d), e->d_name, 0);
            dropped++;
            continue;
        }
        if (nl == 68)
            continue; /* judged with its data file (or as an orphan below) */
        if (file_load(s, addr, &p) < 0) {
            dropped++;
            continue;
        }
        if (sto_has(s, addr) > 0) {
            /* completed before the crash: the object is whole */
            unlink(p->path);
            unlink(p->map_path);
            dropped++;
        } else {
            s->partial_bytes += p->size;
        }
        partial_free(p);
    }
    /* a map whose data file is gone */
    rewinddir(d);
    while ((e = readdir(d)) != NULL) {
        size_t nl = strlen(e->d_name);
        char data[65];
        struct stat st;
        if (nl != 68)
            continue;
        memcpy(data, e->d_name, 64);
        data[64] = '\0';
        if (fstatat(dirfd(d), data, &st, 0) < 0) {
            unlinkat(dirfd(d), e->d_name, 0);
            dropped++;
        }
    }
    closedir(d);
    if (dropped > 0)
        ron_info("svc-storage: recovery removed %d partial-object files", dropped);
    rc = 0;
out:
    free(dir_path);
    return rc;
}

/* sto_close: free what the registry still holds. */
void
sto__partial_close_all(sto_store_t *s)
{
    sto_partial_t *p = s->partials, *next;

    for (; p != NULL; p = next) {
        next = p->next;
        partial_free(p);
    }
    s->partials = NULL;
}

/*
 * sto_store.c - the object store's public API: lifecycle, the streamed put
 * (hashing and outboard building on the way in), the verified reader, and
 * dispatch to the file backend (sto_file.c) or the RAM backend (sto_ram.c).
 * Invariants: a put's bytes are hashed exactly once, as they arrive; a
 * reader hands out no byte of a piece before that piece has verified against
 * the address, and counts and logs every piece that fails.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "ron_err.h"
#include "ron_log.h"
#include "ron_util.h"
#include "sto_internal.h"

uint64_t
sto__now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t
sto__cache_stamp(sto_store_t *s)
{
    uint64_t t = sto__now_us();

    if (t <= s->last_stamp)
        t = s->last_stamp + 1;
    s->last_stamp = t;
    return t;
}

void
sto__stat_from_rec(sto_stat_t *st, const uint8_t *addr, const sto__rec_t *rec)
{
    memcpy(st->addr, addr, STO_ADDR_LEN);
    st->size = rec->size;
    st->created = rec->created;
    st->pins = rec->pins;
    st->state = rec->state == STO_STATE_PINNED ? STO_STATE_PINNED : STO_STATE_CACHE;
    memcpy(st->ctype, rec->ctype, rec->ctype_len);
    st->ctype[rec->ctype_len] = '\0';
}

void
sto__corruption(sto_store_t *s, const uint8_t *addr, uint64_t idx, const char *why)
{
    char hex[68];

    atomic_fetch_add(&s->corruptions, 1);
    sto_addr_format(addr, hex);
    ron_error("svc-storage: corrupt object %s piece %llu: %s; not served", hex,
              (unsigned long long)idx, why);
}

void
sto_addr_format(const uint8_t addr[static STO_ADDR_LEN], char out[static 68])
{
    memcpy(out, "b3:", 3); /* NOLINT(bugprone-not-null-terminated-result): ron_hex_encode terminates */
    ron_hex_encode(out + 3, addr, STO_ADDR_LEN);
}

int
sto_addr_parse(const char *s, uint8_t addr_out[static STO_ADDR_LEN])
{
    if (s == NULL)
        return RON_EINVAL;
    if (strncmp(s, "b3:", 3) == 0)
        s += 3;
    return ron_hex_decode(addr_out, STO_ADDR_LEN, s, strlen(s));
}

int
sto__ctype_ok(const char *ctype)
{
    size_t n = strlen(ctype);

    if (n > STO_CTYPE_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)ctype[i] < 0x20 || (unsigned char)ctype[i] > 0x7e)
            return 0; /* it becomes an HTTP header value: no CR, LF or controls */
    return 1;
}

/* ---- lifecycle ---- */

int
sto_open(const sto_config_t *cfg, sto_store_t **store_out)
{
    sto_store_t *s;
    int rc;

    *store_out = NULL;
    if (cfg == NULL || (cfg->dir == NULL && cfg->read_only))
        return RON_EINVAL;
    s = ron_xcalloc(1, sizeof(*s));
    s->ram = cfg->dir == NULL;
    s->read_only = cfg->read_only != 0;
    s->max_object = cfg->max_object != 0 ? cfg->max_object : STO_MAX_OBJECT_DEFAULT;
    s->quota = cfg->quota;
    s->lock_fd = -1;
    atomic_init(&s->corruptions, 0);
    pthread_mutex_init(&s->lock, NULL);
    if (!s->ram) {
        rc = sto__file_open(s, cfg, cfg->map_size != 0 ? cfg->map_size : STO_MAP_SIZE_DEFAULT);
        if (rc < 0) {
            sto_close(s);
            return rc;
        }
    }
    *store_out = s;
    return 0;
}

void
sto_close(sto_store_t *s)
{
    if (s == NULL)
        return;
    sto__partial_close_all(s);
    if (s->ram)
        sto__ram_close(s);
    else
        sto__file_close(s);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

int
sto_is_ram(const sto_store_t *s)
{
    return s->ram;
}

/* ---- put ---- */

static int
put_ob_out(void *arg, const uint8_t *bytes, size_t len)
{
    sto_put_t *p = arg;

    if (p->s->ram) {
        if (p->ob_written + len > p->ob_cap) {
            size_t cap = p->ob_cap != 0 ? p->ob_cap : 4096;
            while (cap < p->ob_written + len)
                cap *= 2;
            p->ob = ron_xrealloc(p->ob, cap);
            p->ob_cap = cap;
        }
        memcpy(p->ob + p->ob_written, bytes, len);
    } else if (p->ob_fd >= 0) {
        size_t done = 0;
        while (done < len) {
            ssize_t n = pwrite(p->ob_fd, bytes + done, len - done,
                               (off_t)(p->ob_base + p->ob_written + done));
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0)
                return -errno;
            done += (size_t)n;
        }
    }
    p->ob_written += len;
    return 0;
}

/* Quota check of a new object of size bytes against pinned bytes. */
static int
quota_admits(sto_store_t *s, uint64_t size)
{
    sto_totals_t t;
    int rc;

    if (s->quota == 0)
        return 0;
    if (size > s->quota)
        return RON_ESTOREFULL;
    if ((rc = sto_totals(s, &t)) < 0)
        return rc;
    return t.pinned_bytes + size > s->quota ? RON_ESTOREFULL : 0;
}

int
sto_put_begin(sto_store_t *s, const uint8_t *tenant,
              const uint8_t *expected, const char *ctype, uint64_t declared,
              sto_put_t **put_out)
{
    sto_put_t *p;
    int rc;

    *put_out = NULL;
    if (s->read_only || (ctype != NULL && !sto__ctype_ok(ctype)))
        return RON_EINVAL;
    if (declared != STO_SIZE_UNKNOWN && declared > s->max_object)
        return RON_ETOOBIG;
    if (declared != STO_SIZE_UNKNOWN && (rc = quota_admits(s, declared)) < 0)
        return rc;
    p = ron_xcalloc(1, sizeof(*p));
    p->s = s;
    if (tenant != NULL) {
        memcpy(p->tenant, tenant, STO_TENANT_LEN);
        p->pin = 1;
    }
    if (expected != NULL) {
        memcpy(p->expected, expected, STO_ADDR_LEN);
        p->has_expected = 1;
    }
    if (ctype != NULL)
        strcpy(p->ctype, ctype); /* length checked above */
    p->declared = declared;
    p->fd = -1;
    p->ob_fd = -1;
    p->h = sto_tree_hasher_new(put_ob_out, p);
    if (!s->ram && (rc = sto__file_put_open(p)) < 0) {
        sto_put_abort(p);
        return rc;
    }
    *put_out = p;
    return 0;
}

static int
put_append_ram(sto_put_t *p, const void *buf, size_t len)
{
    sto_store_t *s = p->s;

    /* RAM is the medium: the quota bounds what a put may hold (pinned
     * objects cannot be evicted to make room) */
    if (s->quota != 0) {
        sto_totals_t t;
        int rc = sto_totals(s, &t);
        if (rc < 0)
            return rc;
        if (t.pinned_bytes + p->len + len > s->quota)
            return RON_ESTOREFULL;
    }
    if (p->len + len > p->cap)
        sto__ram_buf_grow(p, (size_t)(p->len + len));
    sto__ram_buf_populate(p, (size_t)p->len, len);
    memcpy(p->buf + p->len, buf, len);
    return 0;
}

static int
put_append_file(sto_put_t *p, const uint8_t *buf, size_t len)
{
    size_t done = 0;

    while (done < len) {
        ssize_t n = write(p->fd, buf + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        done += (size_t)n;
    }
    /* start writeback now, so the disk works while these bytes are hashed
     * and the commit's fdatasync finds little left to write (advisory: an
     * error here shows up at that fdatasync) */
    (void)sync_file_range(p->fd, (off_t)(STO_OBJ_HDR_LEN + p->len), (off_t)len,
                          SYNC_FILE_RANGE_WRITE);
    return 0;
}

static int
put_write(sto_put_t *p, const void *buf, size_t len, const uint8_t *cv)
{
    int rc;

    if (p->failed)
        return p->failed;
    if (len == 0)
        return 0;
    if (p->len + len > p->s->max_object || p->len + len < p->len ||
        (p->declared != STO_SIZE_UNKNOWN && p->len + len > p->declared)) {
        rc = RON_ETOOBIG;
        goto out;
    }
    rc = p->s->ram ? put_append_ram(p, buf, len) : put_append_file(p, buf, len);
    if (rc < 0)
        goto out;
    if (cv != NULL && p->has_expected)
        rc = sto_tree_hasher_update_piece(p->h, buf, len, cv);
    else
        rc = sto_tree_hasher_update(p->h, buf, len);
    if (rc < 0)
        goto out;
    p->len += len;
out:
    if (rc < 0)
        p->failed = rc;
    return rc;
}

int
sto_put_write(sto_put_t *p, const void *buf, size_t len)
{
    return put_write(p, buf, len, NULL);
}

int
sto_put_write_piece(sto_put_t *p, const void *buf, size_t len,
                    const uint8_t cv[static STO_TREE_HASH_LEN])
{
    return put_write(p, buf, len, cv);
}

void
sto_put_abort(sto_put_t *p)
{
    if (p == NULL)
        return;
    if (!p->s->ram)
        sto__file_put_discard(p);
    sto_tree_hasher_free(p->h);
    sto__ram_buf_free(p->buf, p->cap);
    free(p->ob);
    free(p);
}

int
sto_put_commit(sto_put_t *p, uint8_t addr_out[STO_ADDR_LEN])
{
    return sto_put_commit_ex(p, addr_out, NULL);
}

int
sto_put_commit_ex(sto_put_t *p, uint8_t addr_out[STO_ADDR_LEN], bool *created_out)
{
    return sto_put_commit_check(p, NULL, NULL, addr_out, created_out);
}

int
sto_put_commit_check(sto_put_t *p, int (*check)(void *arg, const uint8_t addr[STO_ADDR_LEN]),
                     void *arg, uint8_t addr_out[STO_ADDR_LEN], bool *created_out)
{
    uint8_t root[STO_ADDR_LEN];
    int rc;

    if (p->failed) {
        rc = p->failed; /* the error that stopped sto_put_write() */
        goto out;
    }
    if (p->declared != STO_SIZE_UNKNOWN && p->len != p->declared) {
        rc = RON_EINVAL;
        goto out;
    }
    rc = sto_tree_hasher_finish(p->h, root, NULL);
    if (rc < 0)
        goto out;
    if (p->has_expected && memcmp(root, p->expected, STO_ADDR_LEN) != 0) {
        rc = RON_EDIGEST;
        goto out;
    }
    if (check != NULL && (rc = check(arg, root)) < 0)
        goto out;
    if (created_out != NULL) {
        rc = sto_has(p->s, root);
        if (rc < 0)
            goto out;
        *created_out = rc == 0;
    }
    rc = p->s->ram ? sto__ram_commit(p, root) : sto__file_commit(p, root);
    if (rc == 0 && addr_out != NULL)
        memcpy(addr_out, root, STO_ADDR_LEN);
out:
    sto_put_abort(p);
    return rc;
}

int
sto_put_buf(sto_store_t *s, const uint8_t *tenant, const void *buf,
            size_t len, const char *ctype, uint8_t addr_out[STO_ADDR_LEN])
{
    sto_put_t *p;
    int rc = sto_put_begin(s, tenant, NULL, ctype, len, &p);

    if (rc < 0)
        return rc;
    if ((rc = sto_put_write(p, buf, len)) < 0) {
        sto_put_abort(p);
        return rc;
    }
    return sto_put_commit(p, addr_out);
}

/* ---- metadata and pins ---- */

int
sto_stat(sto_store_t *s, const uint8_t addr[static STO_ADDR_LEN], sto_stat_t *st_out)
{
    return s->ram ? sto__ram_stat(s, addr, st_out) : sto__file_stat(s, addr, st_out);
}

int
sto_has(sto_store_t *s, const uint8_t addr[static STO_ADDR_LEN])
{
    sto_stat_t st;
    int rc = sto_stat(s, addr, &st);

    if (rc == RON_ENOTFOUND)
        return 0;
    return rc < 0 ? rc : 1;
}

int
sto_list(sto_store_t *s, const uint8_t *after, sto_stat_t *out, size_t cap, size_t *n_out)
{
    *n_out = 0;
    if (cap > STO_LIST_MAX)
        return RON_EINVAL;
    return s->ram ? sto__ram_list(s, after, out, cap, n_out)
                  : sto__file_list(s, after, out, cap, n_out);
}

int
sto_set_ctype(sto_store_t *s, const uint8_t addr[static STO_ADDR_LEN], const char *ctype)
{
    if (s->read_only || ctype == NULL || !sto__ctype_ok(ctype))
        return RON_EINVAL;
    return s->ram ? sto__ram_set_ctype(s, addr, ctype) : sto__file_set_ctype(s, addr, ctype);
}

int
sto_totals(sto_store_t *s, sto_totals_t *t_out)
{
    sto__totals_t t;
    int rc = 0;

    if (s->ram) {
        pthread_mutex_lock(&s->lock);
        t = s->ram_totals;
        pthread_mutex_unlock(&s->lock);
    } else if ((rc = sto__file_totals(s, &t)) < 0) {
        return rc;
    }
    t_out->objects = t.objects;
    t_out->stored_bytes = t.stored_bytes;
    t_out->pinned_bytes = t.pinned_bytes;
    t_out->quota = s->quota;
    t_out->corruptions = atomic_load(&s->corruptions);
    pthread_mutex_lock(&s->lock);
    t_out->partial_bytes = s->partial_bytes;
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int
sto_pin(sto_store_t *s, const uint8_t tenant[static STO_TENANT_LEN],
        const uint8_t addr[static STO_ADDR_LEN])
{
    if (s->read_only)
        return RON_EINVAL;
    return s->ram ? sto__ram_pin(s, tenant, addr, 1) : sto__file_pin(s, tenant, addr, 1);
}

int
sto_unpin(sto_store_t *s, const uint8_t tenant[static STO_TENANT_LEN],
          const uint8_t addr[static STO_ADDR_LEN])
{
    if (s->read_only)
        return RON_EINVAL;
    return s->ram ? sto__ram_pin(s, tenant, addr, -1) : sto__file_pin(s, tenant, addr, -1);
}

int
sto_pin_count(sto_store_t *s, const uint8_t tenant[static STO_TENANT_LEN],
              const uint8_t addr[static STO_ADDR_LEN], uint32_t *count_out)
{
    *count_out = 0;
    return s->ram ? sto__ram_pin_count(s, tenant, addr, count_out)
                  : sto__file_pin_count(s, tenant, addr, count_out);
}

int
sto_pin_list(sto_store_t *s, const uint8_t tenant[static STO_TENANT_LEN], const uint8_t *after,
             uint8_t *addrs_out, size_t cap, size_t *n_out)
{
    *n_out = 0;
    if (cap > STO_LIST_MAX)
        return RON_EINVAL;
    return s->ram ? sto__ram_pin_list(s, tenant, after, addrs_out, cap, n_out)
                  : sto__file_pin_list(s, tenant, after, addrs_out, cap, n_out);
}

int
sto_gc(sto_store_t *s, uint64_t target, uint64_t *freed_out)
{
    uint64_t freed = 0;
    int rc;

    if (s->read_only)
        return RON_EINVAL;
    pthread_mutex_lock(&s->lock);
    rc = sto__gc_locked(s, target, &freed);
    pthread_mutex_unlock(&s->lock);
    if (freed_out != NULL)
        *freed_out = freed;
    return rc;
}

int
sto__gc_locked(sto_store_t *s, uint64_t target, uint64_t *freed)
{
    sto__totals_t t;
    uint64_t got = 0, part;
    int rc;

    /* an incomplete copy is the least useful cache: idle partials go first */
    if (s->ram)
        t = s->ram_totals;
    else if ((rc = sto__file_totals(s, &t)) < 0)
        return rc;
    part = sto__partial_evict(s, t.stored_bytes, target);
    target = target > s->partial_bytes ? target - s->partial_bytes : 0;
    rc = s->ram ? sto__ram_gc(s, target, &got) : sto__file_gc(s, target, &got);
    *freed = got + part;
    return rc;
}

void
sto_evict_hook_set(sto_store_t *s, sto_evict_fn fn, void *arg)
{
    pthread_mutex_lock(&s->lock);
    s->evict_cb = fn;
    s->evict_arg = arg;
    pthread_mutex_unlock(&s->lock);
}

void
sto__evicted(sto_store_t *s, const uint8_t *addr)
{
    if (s->evict_cb != NULL)
        s->evict_cb(s->evict_arg, addr);
}

/* ---- reader ---- */

int
sto_reader_open(sto_store_t *s, const uint8_t addr[static STO_ADDR_LEN], sto_reader_t **r_out)
{
    sto_reader_t *r = ron_xcalloc(1, sizeof(*r));
    uint64_t last;
    uint8_t *buf;
    size_t len;
    ssize_t n;
    int rc;

    *r_out = NULL;
    r->s = s;
    memcpy(r->addr, addr, STO_ADDR_LEN);
    r->fd = -1;
    r->piece_idx = UINT64_MAX;
    rc = s->ram ? sto__ram_reader_open(r) : sto__file_reader_open(r);
    if (rc < 0)
        goto fail;
    /* bind the size: verify the last piece before anything is served */
    last = sto_tree_pieces(r->size) - 1;
    len = sto_tree_piece_len(r->size, last);
    r->piece = ron_xmalloc(STO_PIECE_LEN);
    buf = r->piece;
    n = sto_reader_read(r, last * STO_PIECE_LEN, buf, len);
    if (n < 0) {
        rc = (int)n;
        goto fail;
    }
    if (r->size == 0) {
        /* an empty object has one empty piece: check it against the root */
        rc = sto_tree_piece_verify(r->addr, 0, r->ob, r->ob_len, 0, buf, 0);
        if (rc < 0) {
            sto__corruption(s, addr, 0, "empty object does not hash to its address");
            rc = RON_EDIGEST;
            goto fail;
        }
    }
    *r_out = r;
    return 0;
fail:
    sto_reader_close(r);
    return rc;
}

uint64_t
sto_reader_size(const sto_reader_t *r)
{
    return r->size;
}

const char *
sto_reader_ctype(const sto_reader_t *r)
{
    return r->ctype;
}

int
sto_reader_proof(const sto_reader_t *r, uint64_t piece, uint8_t *proof_out, size_t cap,
                 size_t *len_out)
{
    return sto_tree_proof_extract_buf(r->size, piece, r->ob, r->ob_len, proof_out, cap, len_out);
}

/* Fetch len bytes at off of the object's stored bytes into buf (unverified). */
static int
reader_fetch(sto_reader_t *r, uint64_t off, uint8_t *buf, size_t len, uint64_t idx)
{
    size_t done = 0;

    if (r->s->ram) {
        memcpy(buf, sto__ram_reader_bytes(r) + off, len);
        return 0;
    }
    while (done < len) {
        ssize_t n = pread(r->fd, buf + done, len - done, (off_t)(STO_OBJ_HDR_LEN + off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0) {
            sto__corruption(r->s, r->addr, idx, "object file shorter than its size");
            return RON_EDIGEST;
        }
        done += (size_t)n;
    }
    return 0;
}

static int
reader_ob_read(void *arg, uint64_t off, uint8_t *buf, size_t len)
{
    const sto_reader_t *r = arg;

    if (off > r->ob_len || len > r->ob_len - off)
        return RON_EDIGEST;
    memcpy(buf, r->ob + off, len);
    return 0;
}

/* Read and verify whole pieces [first, first + count) straight into dst. */
static int
reader_whole_pieces(sto_reader_t *r, uint64_t first, uint64_t count, uint8_t *dst)
{
    uint64_t start = first * STO_PIECE_LEN;
    uint64_t end = (first + count) * STO_PIECE_LEN;
    uint64_t bad = first;
    int rc;

    if (end > r->size)
        end = r->size;
    if ((rc = reader_fetch(r, start, dst, (size_t)(end - start), first)) < 0)
        return rc;
    rc = sto_tree_range_verify_fn(r->addr, r->size, reader_ob_read, r, first, dst,
                                  (size_t)(end - start), &bad);
    if (rc < 0) {
        sto__corruption(r->s, r->addr, bad, "piece does not verify against the address");
        return RON_EDIGEST;
    }
    return 0;
}

/* Make piece idx the verified content of r->piece. */
static int
reader_load_piece(sto_reader_t *r, uint64_t idx)
{
    size_t len = sto_tree_piece_len(r->size, idx);
    int rc;

    if (r->piece_idx == idx)
        return 0;
    r->piece_idx = UINT64_MAX;
    if ((rc = reader_fetch(r, idx * STO_PIECE_LEN, r->piece, len, idx)) < 0)
        return rc;
    rc = sto_tree_piece_verify(r->addr, r->size, r->ob, r->ob_len, idx, r->piece, len);
    if (rc < 0) {
        sto__corruption(r->s, r->addr, idx, "piece does not verify against the address");
        return RON_EDIGEST;
    }
    r->piece_idx = idx;
    return 0;
}

ssize_t
sto_reader_read(sto_reader_t *r, uint64_t off, void *buf, size_t len)
{
    uint8_t *out = buf;
    uint64_t end, pos;
    int rc;

    if (off >= r->size || len == 0)
        return 0;
    end = r->size - off < len ? r->size : off + len;
    if (end - off > (uint64_t)SSIZE_MAX)
        end = off + (uint64_t)SSIZE_MAX;
    pos = off;
    while (pos < end) {
        uint64_t idx = pos / STO_PIECE_LEN;
        uint64_t pstart = idx * STO_PIECE_LEN;
        uint64_t plen = sto_tree_piece_len(r->size, idx);
        if (pos == pstart && end >= pstart + plen) {
            /* whole pieces: read in place, verify as one batch */
            uint64_t npieces = sto_tree_pieces(r->size), count = 1;
            while (idx + count < npieces &&
                   (idx + count) * STO_PIECE_LEN + sto_tree_piece_len(r->size, idx + count) <= end)
                count++;
            rc = reader_whole_pieces(r, idx, count, out + (pos - off));
            if (rc < 0)
                return rc;
            pos = (idx + count) * STO_PIECE_LEN;
            if (pos > r->size)
                pos = r->size;
            continue;
        }
        /* part of a piece: verify the whole piece in our buffer, copy the part */
        if ((rc = reader_load_piece(r, idx)) < 0)
            return rc;
        uint64_t take = pstart + plen < end ? pstart + plen - pos : end - pos;
        memcpy(out + (pos - off), r->piece + (pos - pstart), (size_t)take);
        pos += take;
    }
    return (ssize_t)(end - off);
}

void
sto_reader_close(sto_reader_t *r)
{
    if (r == NULL)
        return;
    if (r->s->ram)
        sto__ram_reader_close(r);
    else
        sto__file_reader_close(r);
    free(r->piece);
    free(r);
}

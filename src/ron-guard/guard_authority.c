/*
 * guard_authority.c - the node's capability authority (kernel side): the
 * key generation, the revocation epoch and the revoked identifiers, each
 * change numbered, persisted before it is acknowledged.
 *
 * Why a sequence number per change: guards in other processes follow the
 * authority by applying its changes in order; with a number on each change
 * a guard knows exactly what it has and asks for the rest (since), and a
 * push that arrives after a missed one is detected instead of silently
 * leaving a revocation out. Kids and the epoch are state, not history: only
 * their newest value matters, so each carries the number of its last change.
 *
 * The state file (<dir>/state) is binary, little-endian, fixed layout (see
 * docs/protocol/capabilities.md "Enforcement"), ending in a BLAKE3 MAC keyed
 * from the master: a file that was cut, edited or written under another
 * master is refused (RON_EKEYFILE), never replaced, because silently
 * starting over would un-revoke every revoked token.
 */
#include <blake3.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "guard_internal.h"
#include "ron_err.h"
#include "ron_fs.h"
#include "ron_log.h"
#include "ron_util.h"

/* Format 2 (written): records carry the identifier's epoch. Format 1 (read only). */
static const uint8_t state_magic[8] = {'R', 'O', 'N', 'G', 'S', 'T', '2', '\n'};
static const uint8_t state_magic_v1[8] = {'R', 'O', 'N', 'G', 'S', 'T', '1', '\n'};
#define STATE_HDR (8 + 9 * 8)
#define STATE_REC_V1 (8 + 8 + AUTH_NONCE_LEN)
#define STATE_REC (8 + 8 + 8 + AUTH_NONCE_LEN)
#define STATE_MAC 32

struct guard_authority {
    char *dir;       /* NULL: RAM only */
    uint8_t *master; /* sodium_malloc */
    int64_t rotate_every, grace;
    guard__state_t st;
    size_t cap_revoked;
    char kid[AUTH_MAX_KID + 1];
    char prev_kid[AUTH_MAX_KID + 1];
};

void
guard__state_key(const uint8_t master[static GUARD_MASTER_LEN], uint8_t key_out[static 32])
{
    static const char ctx[] = "ron-guard state key v1";
    blake3_hasher h;
    blake3_hasher_init_keyed(&h, master);
    blake3_hasher_update(&h, ctx, sizeof ctx - 1);
    blake3_hasher_finalize(&h, key_out, 32);
    sodium_memzero(&h, sizeof h);
}

static void
put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t
get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static void
state_mac(const uint8_t key[static 32], const uint8_t *buf, size_t len, uint8_t out[STATE_MAC])
{
    blake3_hasher h;
    blake3_hasher_init_keyed(&h, key);
    blake3_hasher_update(&h, buf, len);
    blake3_hasher_finalize(&h, out, STATE_MAC);
    sodium_memzero(&h, sizeof h); /* keyed by the state key */
}

int
guard__state_encode(const guard__state_t *st, const uint8_t key[static 32], uint8_t **out,
                    size_t *len_out)
{
    size_t len = STATE_HDR + st->n_revoked * STATE_REC + STATE_MAC;
    if (len > GUARD_STATE_MAX)
        return RON_ETOOBIG;
    uint8_t *b = ron_xmalloc(len);
    memcpy(b, state_magic, sizeof state_magic);
    const uint64_t hdr[9] = {st->gen,
                             (uint64_t)st->gen_started,
                             st->prev_gen,
                             (uint64_t)st->prev_until,
                             st->epoch,
                             st->epoch_seq,
                             st->kids_seq,
                             st->head,
                             (uint64_t)st->n_revoked};
    for (size_t i = 0; i < 9; i++)
        put64(b + 8 + 8 * i, hdr[i]);
    uint8_t *p = b + STATE_HDR;
    for (size_t i = 0; i < st->n_revoked; i++, p += STATE_REC) {
        put64(p, st->revoked[i].seq);
        put64(p + 8, (uint64_t)st->revoked[i].until);
        put64(p + 16, st->revoked[i].epoch);
        memcpy(p + 24, st->revoked[i].nonce, AUTH_NONCE_LEN);
    }
    state_mac(key, b, len - STATE_MAC, p);
    *out = b;
    *len_out = len;
    return 0;
}

int
guard__state_decode(const uint8_t *buf, size_t len, const uint8_t key[static 32],
                    guard__state_t *st)
{
    memset(st, 0, sizeof *st);
    if (len < STATE_HDR + STATE_MAC || len > GUARD_STATE_MAX)
        return RON_EKEYFILE;
    bool v1 = memcmp(buf, state_magic_v1, sizeof state_magic_v1) == 0;
    size_t rec = v1 ? STATE_REC_V1 : STATE_REC;
    if (!v1 && memcmp(buf, state_magic, sizeof state_magic) != 0)
        return RON_EKEYFILE;
    uint8_t mac[STATE_MAC];
    state_mac(key, buf, len - STATE_MAC, mac);
    if (sodium_memcmp(mac, buf + len - STATE_MAC, STATE_MAC) != 0)
        return RON_EKEYFILE;
    uint64_t h[9];
    for (size_t i = 0; i < 9; i++)
        h[i] = get64(buf + 8 + 8 * i);
    st->gen = h[0];
    st->gen_started = (int64_t)h[1];
    st->prev_gen = h[2];
    st->prev_until = (int64_t)h[3];
    st->epoch = h[4];
    st->epoch_seq = h[5];
    st->kids_seq = h[6];
    st->head = h[7];
    uint64_t n = h[8];
    if (n > GUARD_MAX_REVOKED || len != STATE_HDR + n * rec + STATE_MAC)
        return RON_EKEYFILE;
    if (st->gen == 0 || st->gen > 999999999999ull || st->prev_gen >= st->gen || st->kids_seq == 0 ||
        st->kids_seq > st->head || st->epoch_seq > st->head ||
        (st->epoch_seq == 0 && st->epoch != 0) || st->gen_started < 0 || st->prev_until < 0)
        return RON_EKEYFILE;
    st->n_revoked = (size_t)n;
    st->revoked = n ? ron_xcalloc((size_t)n, sizeof *st->revoked) : NULL;
    const uint8_t *p = buf + STATE_HDR;
    uint64_t last = 0;
    for (size_t i = 0; i < n; i++, p += rec) {
        guard__revoked_t *r = &st->revoked[i];
        r->seq = get64(p);
        r->until = (int64_t)get64(p + 8);
        r->epoch = v1 ? st->epoch : get64(p + 16);
        memcpy(r->nonce, p + (v1 ? 16 : 24), AUTH_NONCE_LEN);
        if (r->seq <= last || r->seq > st->head || r->until < 0) {
            free(st->revoked);
            memset(st, 0, sizeof *st);
            return RON_EKEYFILE;
        }
        last = r->seq;
    }
    return 0;
}

/* ---- persistence ---- */

static int
state_save(guard_authority_t *a)
{
    if (a->dir == NULL)
        return 0;
    uint8_t key[32];
    uint8_t *buf = NULL;
    size_t len = 0;
    char path[PATH_MAX], tmp[PATH_MAX];
    int fd = -1, rc;
    guard__state_key(a->master, key);
    rc = guard__state_encode(&a->st, key, &buf, &len);
    sodium_memzero(key, sizeof key);
    if (rc != 0)
        goto out;
    if ((size_t)snprintf(path, sizeof path, "%s/state", a->dir) >= sizeof path ||
        (size_t)snprintf(tmp, sizeof tmp, "%s/state.tmp", a->dir) >= sizeof tmp) {
        rc = -ENAMETOOLONG;
        goto out;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    for (size_t off = 0; off < len;) {
        ssize_t w = write(fd, buf + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            rc = -errno;
            goto out;
        }
        off += (size_t)w;
    }
    if (fsync(fd) != 0) {
        rc = -errno;
        goto out;
    }
    if (close(fd) != 0) {
        fd = -1;
        rc = -errno;
        goto out;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        rc = -errno;
        goto out;
    }
    rc = ron_fsync_dir(a->dir);
out:
    if (fd >= 0) {
        close(fd);
        unlink(tmp);
    }
    free(buf);
    return rc;
}

static int
state_load(guard_authority_t *a, bool *found)
{
    char path[PATH_MAX];
    uint8_t *buf = NULL;
    uint8_t key[32];
    int rc = 0;
    *found = false;
    if ((size_t)snprintf(path, sizeof path, "%s/state", a->dir) >= sizeof path)
        return -ENAMETOOLONG;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return errno == ENOENT ? 0 : -errno;
    *found = true;
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        rc = -errno;
        goto out;
    }
    if (!S_ISREG(sb.st_mode) || sb.st_size > (off_t)GUARD_STATE_MAX) {
        rc = RON_EKEYFILE;
        goto out;
    }
    size_t len = (size_t)sb.st_size;
    buf = ron_xmalloc(len ? len : 1);
    for (size_t off = 0; off < len;) {
        ssize_t r = read(fd, buf + off, len - off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -errno;
            goto out;
        }
        if (r == 0) {
            rc = RON_EKEYFILE;
            goto out;
        }
        off += (size_t)r;
    }
    guard__state_key(a->master, key);
    rc = guard__state_decode(buf, len, key, &a->st);
    sodium_memzero(key, sizeof key);
out:
    close(fd);
    free(buf);
    return rc;
}

/* ---- in-memory state ---- */

static void
kid_of(uint64_t gen, char kid[static AUTH_MAX_KID + 1])
{
    char tmp[24];
    snprintf(tmp, sizeof tmp, "r%llu", (unsigned long long)gen);
    snprintf(kid, AUTH_MAX_KID + 1, "%.16s", tmp); /* gen <= 10^12 (state_decode) */
}

static void
kids_refresh(guard_authority_t *a)
{
    kid_of(a->st.gen, a->kid);
    if (a->st.prev_gen)
        kid_of(a->st.prev_gen, a->prev_kid);
    else
        a->prev_kid[0] = '\0';
}

static void
kids_entry(const guard_authority_t *a, guard_entry_t *e)
{
    memset(e, 0, sizeof *e);
    e->seq = a->st.kids_seq;
    e->kind = GUARD_E_KIDS;
    e->n_kids = 1;
    memcpy(e->kids[0], a->kid, sizeof a->kid);
    if (a->prev_kid[0]) {
        memcpy(e->kids[1], a->prev_kid, sizeof a->prev_kid);
        e->n_kids = 2;
    }
}

static void
epoch_entry(const guard_authority_t *a, guard_entry_t *e)
{
    memset(e, 0, sizeof *e);
    e->seq = a->st.epoch_seq;
    e->kind = GUARD_E_EPOCH;
    e->epoch = a->st.epoch;
}

static void
revoke_entry(const guard__revoked_t *r, guard_entry_t *e)
{
    memset(e, 0, sizeof *e);
    e->seq = r->seq;
    e->kind = GUARD_E_REVOKE;
    memcpy(e->nonce, r->nonce, AUTH_NONCE_LEN);
    e->until = r->until;
    e->epoch = r->epoch;
}

/* Drop revocations whose token has expired (until + AUTH_SKEW past). Returns how many. */
static size_t
prune(guard_authority_t *a, int64_t now)
{
    size_t w = 0;
    for (size_t i = 0; i < a->st.n_revoked; i++) {
        guard__revoked_t *r = &a->st.revoked[i];
        if (r->until != 0 && r->until < INT64_MAX - AUTH_SKEW && r->until + AUTH_SKEW < now)
            continue;
        a->st.revoked[w++] = *r;
    }
    size_t dropped = a->st.n_revoked - w;
    a->st.n_revoked = w;
    return dropped;
}

int
guard_authority_open(const guard_authority_opts_t *o, int64_t now, guard_authority_t **out)
{
    if (o == NULL || o->master == NULL || out == NULL || o->rotate_every < 0 ||
        o->rotate_every > GUARD_ROTATE_EVERY || o->grace < 0)
        return RON_EINVAL;
    *out = NULL;
    if (sodium_init() < 0) /* idempotent; sodium_malloc needs it */
        return -ENOMEM;
    int rc;
    bool found = false;
    guard_authority_t *a = ron_xcalloc(1, sizeof *a);
    a->master = sodium_malloc(GUARD_MASTER_LEN);
    if (a->master == NULL) {
        free(a);
        return -ENOMEM;
    }
    memcpy(a->master, o->master, GUARD_MASTER_LEN);
    a->rotate_every = o->rotate_every ? o->rotate_every : GUARD_ROTATE_EVERY;
    a->grace = o->grace ? o->grace : GUARD_GRACE_DEFAULT;
    if (now == 0)
        now = ron_unix_time();
    if (o->dir != NULL) {
        a->dir = ron_xstrdup(o->dir);
        rc = ron_mkdir_p(a->dir);
        if (rc != 0)
            goto fail;
        if (chmod(a->dir, 0700) != 0) {
            rc = -errno;
            goto fail;
        }
        rc = state_load(a, &found);
        if (rc != 0) {
            if (rc == RON_EKEYFILE)
                ron_error("guard: %s/state is malformed or tampered with (or written under "
                          "another identity); refusing to start over",
                          a->dir);
            goto fail;
        }
    }
    if (!found) {
        a->st.gen = 1;
        a->st.gen_started = now;
        a->st.kids_seq = 1;
        a->st.head = 1;
    }
    a->cap_revoked = a->st.n_revoked;
    kids_refresh(a);
    /* A format-1 file may hold "for ever" (0) revocations: capped as new ones are. */
    bool capped = false;
    for (size_t i = 0; i < a->st.n_revoked; i++) {
        if (a->st.revoked[i].until == 0) {
            a->st.revoked[i].until = now + a->rotate_every + a->grace;
            capped = true;
        }
    }
    if (!found || prune(a, now) > 0 || capped) {
        rc = state_save(a);
        if (rc != 0)
            goto fail;
    }
    *out = a;
    return 0;
fail:
    guard_authority_close(a);
    return rc;
}

void
guard_authority_close(guard_authority_t *a)
{
    if (a == NULL)
        return;
    sodium_free(a->master);
    free(a->st.revoked);
    free(a->dir);
    free(a);
}

uint64_t
guard_authority_head(const guard_authority_t *a)
{
    return a->st.head;
}

const char *
guard_authority_kid(const guard_authority_t *a)
{
    return a->kid;
}

uint64_t
guard_authority_epoch(const guard_authority_t *a)
{
    return a->st.epoch;
}

void
guard_authority_info(const guard_authority_t *a, guard_authority_info_t *out)
{
    memset(out, 0, sizeof *out);
    memcpy(out->kid, a->kid, sizeof out->kid);
    memcpy(out->prev_kid, a->prev_kid, sizeof out->prev_kid);
    out->gen_started = a->st.gen_started;
    out->prev_until = a->st.prev_gen != 0 ? a->st.prev_until : 0;
    out->rotate_every = a->rotate_every;
    out->grace = a->grace;
    out->epoch = a->st.epoch;
    out->head = a->st.head;
    out->n_revoked = a->st.n_revoked;
}

size_t
guard_authority_since(const guard_authority_t *a, uint64_t after, guard_entry_t *out, size_t max,
                      bool *more_out)
{
    /* Three streams in seq order: kids, epoch, revocations (ascending). */
    size_t lo = 0, hi = a->st.n_revoked;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (a->st.revoked[mid].seq <= after)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t ri = lo, n = 0;
    bool kids = a->st.kids_seq > after, epoch = a->st.epoch_seq > after;
    for (;;) {
        uint64_t best = UINT64_MAX;
        int which = -1;
        if (kids && a->st.kids_seq < best) {
            best = a->st.kids_seq;
            which = 0;
        }
        if (epoch && a->st.epoch_seq < best) {
            best = a->st.epoch_seq;
            which = 1;
        }
        if (ri < a->st.n_revoked && a->st.revoked[ri].seq < best) {
            best = a->st.revoked[ri].seq;
            which = 2;
        }
        if (which < 0)
            break;
        if (n == max) {
            if (more_out)
                *more_out = true;
            return n;
        }
        if (which == 0) {
            kids_entry(a, &out[n++]);
            kids = false;
        } else if (which == 1) {
            epoch_entry(a, &out[n++]);
            epoch = false;
        } else {
            revoke_entry(&a->st.revoked[ri++], &out[n++]);
        }
    }
    if (more_out)
        *more_out = false;
    return n;
}

int
guard_authority_revoke(guard_authority_t *a, const char *id, size_t len, int64_t until, int64_t now,
                       guard_entry_t *entry_out)
{
    auth_id_t aid;
    if (id == NULL || auth_id_parse(id, len, &aid) != 0)
        return RON_ECAPFORMAT;
    if (until < 0)
        return RON_EINVAL;
    if (now == 0)
        now = ron_unix_time();
    if (aid.epoch < a->st.epoch) {
        /* dead already by the epoch: nothing to keep (and no slot to fill) */
        if (entry_out)
            memset(entry_out, 0, sizeof *entry_out);
        return 0;
    }
    /* No token lives past its kid: one minted now under the current kid is
     * dead by rotate_every + grace from now (a revocation of an older kid's
     * token needs less). So "for ever" and anything longer is capped there,
     * and a chosen id cannot hold a slot for good. */
    int64_t cap = now + a->rotate_every + a->grace;
    if (until == 0 || until > cap)
        until = cap;
    /* Keep a copy: a failed save leaves the state as it was. */
    guard__state_t saved = a->st;
    guard__revoked_t *copy = NULL;
    if (a->st.n_revoked > 0) {
        copy = ron_xmalloc(a->st.n_revoked * sizeof *copy);
        memcpy(copy, a->st.revoked, a->st.n_revoked * sizeof *copy);
    }
    int rc = 0;
    guard__revoked_t r = {.seq = a->st.head + 1, .until = until, .epoch = aid.epoch};
    memcpy(r.nonce, aid.nonce, AUTH_NONCE_LEN);
    for (size_t i = 0; i < a->st.n_revoked; i++) {
        guard__revoked_t *o = &a->st.revoked[i];
        if (memcmp(o->nonce, aid.nonce, AUTH_NONCE_LEN) != 0)
            continue;
        /* Already revoked: the later until wins (a format-1 0, for ever, is
         * capped as above); it moves to the end. */
        if (o->until == 0 || o->until > until)
            r.until = RON_MIN(o->until == 0 ? cap : o->until, cap);
        r.epoch = RON_MAX(r.epoch, o->epoch); /* the same nonce under another epoch */
        memmove(o, o + 1, (a->st.n_revoked - i - 1) * sizeof *o);
        a->st.n_revoked--;
        break;
    }
    if (a->st.n_revoked >= GUARD_MAX_REVOKED)
        prune(a, now);
    if (a->st.n_revoked >= GUARD_MAX_REVOKED) {
        rc = RON_ECAPFULL;
        goto fail;
    }
    if (a->st.n_revoked == a->cap_revoked) {
        a->cap_revoked = a->cap_revoked ? a->cap_revoked * 2 : 64;
        if (a->cap_revoked > GUARD_MAX_REVOKED)
            a->cap_revoked = GUARD_MAX_REVOKED;
        a->st.revoked = ron_xrealloc(a->st.revoked, a->cap_revoked * sizeof *a->st.revoked);
    }
    a->st.revoked[a->st.n_revoked++] = r;
    a->st.head = r.seq;
    rc = state_save(a);
    if (rc != 0)
        goto fail;
    free(copy);
    if (entry_out)
        revoke_entry(&r, entry_out);
    return 0;
fail : {
    guard__revoked_t *arr = a->st.revoked;
    a->st = saved;
    a->st.revoked = arr;
    if (saved.n_revoked > 0)
        memcpy(arr, copy, saved.n_revoked * sizeof *copy);
    free(copy);
    return rc;
}
}

int64_t
guard_authority_raise_epoch(guard_authority_t *a, uint64_t epoch, guard_entry_t *entry_out)
{
    if (epoch == 0) {
        if (a->st.epoch == UINT64_MAX)
            return RON_EINVAL;
        epoch = a->st.epoch + 1;
    }
    if (epoch > (uint64_t)INT64_MAX)
        return RON_EINVAL;
    if (epoch <= a->st.epoch) {
        if (entry_out)
            epoch_entry(a, entry_out);
        return (int64_t)a->st.epoch;
    }
    guard__state_t saved = a->st;
    guard__revoked_t *copy = NULL;
    if (a->st.n_revoked > 0) {
        copy = ron_xmalloc(a->st.n_revoked * sizeof *copy);
        memcpy(copy, a->st.revoked, a->st.n_revoked * sizeof *copy);
    }
    /* Every identifier of an older epoch is dead by the epoch itself: its
     * revocation goes (guards drop theirs by time, or hold them harmlessly). */
    size_t w = 0;
    for (size_t i = 0; i < a->st.n_revoked; i++)
        if (a->st.revoked[i].epoch >= epoch)
            a->st.revoked[w++] = a->st.revoked[i];
    a->st.n_revoked = w;
    a->st.epoch = epoch;
    a->st.epoch_seq = ++a->st.head;
    int rc = state_save(a);
    if (rc != 0) {
        guard__revoked_t *arr = a->st.revoked;
        a->st = saved;
        a->st.revoked = arr;
        if (saved.n_revoked > 0)
            memcpy(arr, copy, saved.n_revoked * sizeof *copy);
        free(copy);
        return rc;
    }
    free(copy);
    if (entry_out)
        epoch_entry(a, entry_out);
    return (int64_t)epoch;
}

int
guard_authority_tick(guard_authority_t *a, int64_t now, bool force, guard_entry_t *entry_out)
{
    if (now == 0)
        now = ron_unix_time();
    guard__state_t saved = a->st;
    bool changed = false;
    if (force || now - a->st.gen_started >= a->rotate_every) {
        /* The grace counts from when the generation was due to rotate, not
         * from now: a node that was down for longer must not give an old kid
         * a fresh grace, since the revocations of its tokens are kept only
         * rotate_every + grace from when they were made. */
        int64_t due = a->st.gen_started + a->rotate_every;
        a->st.prev_gen = a->st.gen;
        a->st.prev_until = (now < due ? now : due) + a->grace;
        a->st.gen++;
        a->st.gen_started = now;
        changed = true;
    }
    if (a->st.prev_gen != 0 && now >= a->st.prev_until) {
        a->st.prev_gen = 0; /* its grace ended */
        a->st.prev_until = 0;
        changed = true;
    }
    if (changed)
        a->st.kids_seq = ++a->st.head;
    size_t pruned = prune(a, now);
    if (changed || pruned > 0) {
        int rc = state_save(a);
        if (rc != 0) {
            /* Back to the saved scalars; the pruned array stays (its dropped
             * entries had expired anyway). */
            guard__revoked_t *arr = a->st.revoked;
            size_t n = a->st.n_revoked;
            a->st = saved;
            a->st.revoked = arr;
            a->st.n_revoked = n;
            kids_refresh(a);
            return rc;
        }
    }
    kids_refresh(a);
    if (!changed)
        return 0;
    if (entry_out)
        kids_entry(a, entry_out);
    return 1;
}

long
guard_authority_mint_operator(guard_authority_t *a, char *out, size_t cap)
{
    char id[AUTH_ID_MAX + 1];
    int rc = auth_id_new(id, a->kid, a->st.epoch);
    if (rc != 0)
        return rc;
    uint8_t *key = sodium_malloc(GUARD_KEY_LEN);
    if (key == NULL)
        return -ENOMEM;
    guard_root_key(a->master, a->kid, key);
    long n = auth_mint(key, GUARD_KEY_LEN, id, NULL, 0, out, cap);
    sodium_free(key);
    return n;
}

/*
 * sto_internal.h - shared by the object-store files of svc-storage
 * (sto_store.c, sto_file.c, sto_ram.c, sto_meta.c, sto_glue.c) and their
 * tests only. The on-disk records decoded here are documented, offset by
 * offset, in docs/protocol/storage-format.md.
 */
#ifndef STO_INTERNAL_H
#define STO_INTERNAL_H

#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "svc_storage.h"

#define STO_FORMAT_VERSION 2u  /* <dir>/FORMAT and every object file's header */
#define STO_OBJ_MAGIC "RONSTOB2" /* 8 bytes at offset 0 of every object file */
#define STO_OBJ_HDR_LEN 256u    /* object file header; the object's bytes follow it */
#define STO_OBJ_PINNED 0x01u    /* header flag: the put pinned the object for its tenant */
#define STO_REC_HDR_LEN 32u     /* object record before its content type */
#define STO_PIN_KEY_LEN (STO_TENANT_LEN + STO_ADDR_LEN)
#define STO_CACHE_KEY_LEN (8 + STO_ADDR_LEN)
#define STO_TOTALS_LEN 24u

/* ---- records (sto_meta.c; pure, fuzzed by fuzz_store_meta.c) ---- */

typedef struct {
    uint64_t size;       /* object bytes */
    uint64_t created;    /* unix seconds */
    uint64_t cache_since; /* unix microseconds it became cache; 0 while pinned */
    uint32_t pins;       /* sum over tenants */
    uint8_t state;       /* sto_state_t */
    uint16_t ctype_len;  /* <= STO_CTYPE_MAX */
    char ctype[STO_CTYPE_MAX + 1];
} sto__rec_t;

/* Header of an object file (offsets in docs/protocol/storage-format.md):
 * everything the put's index transaction wrote, so the index can be rebuilt
 * from the file when that transaction was lost. */
typedef struct {
    uint64_t size;                  /* object bytes */
    uint8_t root[STO_ADDR_LEN];     /* the object's address */
    uint32_t piece_size;            /* STO_PIECE_LEN */
    uint64_t created;               /* unix seconds of the put */
    uint8_t tenant[STO_TENANT_LEN]; /* the put's tenant; zero unless pinned */
    uint8_t flags;                  /* STO_OBJ_PINNED or 0 (a cache copy) */
    uint16_t ctype_len;             /* <= STO_CTYPE_MAX */
    char ctype[STO_CTYPE_MAX + 1];  /* NUL-terminated */
} sto__obj_hdr_t;

typedef struct {
    uint64_t objects, stored_bytes, pinned_bytes;
} sto__totals_t;

size_t sto__rec_encode(const sto__rec_t *rec, uint8_t *out, size_t cap);
int sto__rec_decode(const uint8_t *buf, size_t len, sto__rec_t *rec_out);
void sto__obj_hdr_encode(const sto__obj_hdr_t *h, uint8_t out[static STO_OBJ_HDR_LEN]);
/* Decode the STO_OBJ_HDR_LEN bytes at buf (len must be at least that). */
int sto__obj_hdr_decode(const uint8_t *buf, size_t len, sto__obj_hdr_t *h_out);
/* Length of the object file of an object of size bytes: header, bytes, outboard. */
uint64_t sto__obj_file_len(uint64_t size);
void sto__totals_encode(const sto__totals_t *t, uint8_t out[static STO_TOTALS_LEN]);
int sto__totals_decode(const uint8_t *buf, size_t len, sto__totals_t *t_out);
int sto__u32_decode(const uint8_t *buf, size_t len, uint32_t *v_out);
void sto__put_le64(uint8_t *p, uint64_t v);
uint64_t sto__get_le64(const uint8_t *p);
void sto__put_le32(uint8_t *p, uint32_t v);
uint32_t sto__get_le32(const uint8_t *p);

/* ---- the store ---- */

typedef struct sto__ramobj sto__ramobj_t;

struct sto_store {
    int ram;                    /* 1: RAM backend */
    int read_only;
    uint64_t max_object, quota; /* bytes; quota 0 = unlimited */
    atomic_uint_fast64_t corruptions;
    pthread_mutex_t lock;       /* file: commit/pin/GC critical sections; RAM: all state */
    /* file backend */
    char *dir;
    int lock_fd;                /* flock'd <dir>/LOCK; -1 when read-only */
    MDB_env *env;
    MDB_dbi db_obj, db_pin, db_cache, db_meta;
    struct sto__syncer *syncer; /* writable: fsyncs a put's directory beside its index commit */
    /* RAM backend (under lock) */
    sto__ramobj_t **objs;       /* sorted by address */
    size_t nobjs, capobjs;
    sto__totals_t ram_totals;
    uint64_t last_stamp;        /* last cache stamp handed out (under lock) */
    /* partial objects (sto_partial.c; under lock) */
    sto_partial_t *partials;    /* open ones (file) or all (RAM) */
    uint64_t partial_bytes;     /* sum of the sizes of partial objects */
    sto_evict_fn evict_cb;      /* sto_evict_hook_set */
    void *evict_arg;
};

struct sto_put {
    sto_store_t *s;
    uint8_t tenant[STO_TENANT_LEN];
    uint8_t expected[STO_ADDR_LEN];
    int has_expected;
    int pin;                    /* 1: pin for tenant at commit; 0: a cache copy */
    int failed;                 /* 0, or the error that stopped the put */
    uint64_t declared, len;
    char ctype[STO_CTYPE_MAX + 1];
    sto_tree_hasher_t *h;
    uint64_t ob_written;        /* outboard bytes delivered by the hasher so far */
    /* file: one temporary object file; the outboard goes straight to its
     * final offset when the size is declared, else to a spill file that the
     * commit appends */
    int fd;                     /* tmp object file (bytes at STO_OBJ_HDR_LEN), -1 when none */
    int ob_fd;                  /* where outboard bytes go: fd, the spill file, or -1 */
    uint64_t ob_base;           /* offset of outboard byte 0 in ob_fd */
    uint64_t created;           /* unix seconds in the file header; the record's too */
    char *tmp_data, *tmp_ob;    /* paths; tmp_ob NULL unless spilling */
    /* RAM */
    uint8_t *buf;               /* object bytes: malloc'd below STO__RAM_MAP_MIN, else mmap'd */
    size_t cap;
    uint8_t *ob;                /* outboard bytes (ob_written of them) */
    size_t ob_cap;
};

struct sto_reader {
    sto_store_t *s;
    uint8_t addr[STO_ADDR_LEN];
    uint64_t size;
    char ctype[STO_CTYPE_MAX + 1];
    const uint8_t *ob;          /* outboard nodes (after the file header) */
    size_t ob_len;
    int fd;                     /* file: object bytes; -1 for RAM */
    void *map;                  /* file: mmap of the file's tail holding the outboard */
    size_t map_len;
    sto__ramobj_t *ro;          /* RAM: referenced object */
    uint8_t *piece;             /* STO_PIECE_SIZE bytes, lazily allocated */
    uint64_t piece_idx;         /* index of the verified piece in `piece`; UINT64_MAX none */
};

/* Backend entry points (sto_file.c / sto_ram.c); sto_store.c dispatches. */
int sto__file_open(sto_store_t *s, const sto_config_t *cfg, uint64_t map_size);
void sto__file_close(sto_store_t *s);
int sto__file_commit(sto_put_t *p, const uint8_t root[static STO_ADDR_LEN]);
int sto__file_put_open(sto_put_t *p);
void sto__file_put_discard(sto_put_t *p);
int sto__file_stat(sto_store_t *s, const uint8_t *addr, sto_stat_t *st);
int sto__file_list(sto_store_t *s, const uint8_t *after, sto_stat_t *out, size_t cap, size_t *n);
int sto__file_set_ctype(sto_store_t *s, const uint8_t *addr, const char *ctype);
int sto__file_totals(sto_store_t *s, sto__totals_t *t);
int sto__file_pin(sto_store_t *s, const uint8_t *tenant, const uint8_t *addr, int delta);
int sto__file_pin_count(sto_store_t *s, const uint8_t *tenant, const uint8_t *addr, uint32_t *c);
int sto__file_pin_list(sto_store_t *s, const uint8_t *tenant, const uint8_t *after,
                       uint8_t *out, size_t cap, size_t *n);
int sto__file_gc(sto_store_t *s, uint64_t target, uint64_t *freed);
int sto__file_reader_open(sto_reader_t *r);
void sto__file_reader_close(sto_reader_t *r);
/* <dir>/objects/<ab>/<hex><suffix>; returns new. */
char *sto__file_object_path(const sto_store_t *s, const uint8_t *addr, const char *suffix);

/* RAM object buffers of at least this many bytes are anonymous mappings
 * (prefaulted in one call, grown by mremap without copying); smaller ones
 * come from malloc. */
#define STO__RAM_MAP_MIN (256u << 10)

void sto__ram_close(sto_store_t *s);
/* Make p->buf hold at least need bytes (the declared size at once when known). */
void sto__ram_buf_grow(sto_put_t *p, size_t need);
/* Populate the pages of p->buf that bytes [off, off + len) will land on, in
 * one call (mapped buffers only; advisory). */
void sto__ram_buf_populate(sto_put_t *p, size_t off, size_t len);
/* Free an object buffer of cap bytes from sto__ram_buf_grow (NULL does nothing). */
void sto__ram_buf_free(uint8_t *buf, size_t cap);
int sto__ram_commit(sto_put_t *p, const uint8_t root[static STO_ADDR_LEN]);
int sto__ram_stat(sto_store_t *s, const uint8_t *addr, sto_stat_t *st);
int sto__ram_list(sto_store_t *s, const uint8_t *after, sto_stat_t *out, size_t cap, size_t *n);
int sto__ram_set_ctype(sto_store_t *s, const uint8_t *addr, const char *ctype);
int sto__ram_pin(sto_store_t *s, const uint8_t *tenant, const uint8_t *addr, int delta);
int sto__ram_pin_count(sto_store_t *s, const uint8_t *tenant, const uint8_t *addr, uint32_t *c);
int sto__ram_pin_list(sto_store_t *s, const uint8_t *tenant, const uint8_t *after,
                      uint8_t *out, size_t cap, size_t *n);
int sto__ram_gc(sto_store_t *s, uint64_t target, uint64_t *freed);
int sto__ram_reader_open(sto_reader_t *r);
void sto__ram_reader_close(sto_reader_t *r);
/* The referenced object's stored (unverified) bytes. */
const uint8_t *sto__ram_reader_bytes(const sto_reader_t *r);
/* Tests only: flip one byte of a stored RAM object. Returns 0 or RON_ENOTFOUND. */
int sto__ram_corrupt(sto_store_t *s, const uint8_t *addr, uint64_t off);

/* Partial objects (sto_partial.c). */
/* Evict idle partial objects, oldest first, while stored + partial bytes >
 * target. Lock held. Returns the bytes freed. */
uint64_t sto__partial_evict(sto_store_t *s, uint64_t stored, uint64_t target);
/* Writable file store open: create <dir>/partial, drop malformed pairs. */
int sto__partial_recover(sto_store_t *s);
/* sto_close: free every registered partial. */
void sto__partial_close_all(sto_store_t *s);
/* sto_gc with the lock held: idle partials first, then cache objects. */
int sto__gc_locked(sto_store_t *s, uint64_t target, uint64_t *freed);
/* Tell the eviction hook (if any) that addr was evicted. */
void sto__evicted(sto_store_t *s, const uint8_t *addr);

/* Shared helpers (sto_store.c). */
/* 1 when ctype is <= STO_CTYPE_MAX printable ASCII bytes (0x20..0x7e). */
int sto__ctype_ok(const char *ctype);
uint64_t sto__now_us(void);
/* A cache-order stamp: unix microseconds, strictly increasing per store,
 * so eviction order is the order objects became cache. Lock held. */
uint64_t sto__cache_stamp(sto_store_t *s);
void sto__stat_from_rec(sto_stat_t *st, const uint8_t *addr, const sto__rec_t *rec);
void sto__corruption(sto_store_t *s, const uint8_t *addr, uint64_t idx, const char *why);

#endif

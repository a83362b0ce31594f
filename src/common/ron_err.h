/*
 * ron_err.h - error codes shared by every component.
 * A function that can fail returns 0 or a negative code: system errors are
 * -errno (so libuv results pass through unchanged), project errors are the
 * RON_E* values below -1000. ron_strerror() names either kind.
 */
#ifndef RON_ERR_H
#define RON_ERR_H

#define RON_ERRNO_MAP(X)                                                        \
    X(RON_EAGAIN,    -1001, "incomplete input: need more bytes")                \
    X(RON_EPROTO,    -1002, "protocol error")                                   \
    X(RON_ETOOBIG,   -1003, "too large")                                        \
    X(RON_EFLOOD,    -1004, "peer exceeded a queue or rate limit")              \
    X(RON_EBUSY,     -1005, "busy: capacity exhausted")                         \
    X(RON_ETIMEOUT,  -1006, "deadline expired")                                 \
    X(RON_ECLOSED,   -1007, "closed")                                           \
    X(RON_EAUTH,     -1008, "authentication failed")                            \
    X(RON_ETLS,      -1009, "TLS error")                                        \
    X(RON_ECONFIG,   -1010, "invalid configuration")                            \
    X(RON_ENOTFOUND, -1011, "not found")                                        \
    X(RON_EBOMB,     -1012, "decompressed size exceeds its bound")              \
    X(RON_EVERSION,  -1013, "unsupported protocol version")                     \
    X(RON_EFLAGS,    -1014, "reserved flag bits set")                           \
    X(RON_ECAPSTART, -1015, "capability on a frame without START")              \
    X(RON_EJSON,     -1016, "malformed JSON")                                   \
    X(RON_ESHUTDOWN, -1017, "shutting down")                                    \
    X(RON_EDIGEST,   -1018, "bytes do not match their address")                \
    X(RON_EUNAVAIL,  -1019, "peer unavailable")                                 \
    X(RON_ECREDIT,   -1020, "flow-control credit violated")                     \
    X(RON_ELENGTH,   -1021, "frame length field out of range")                  \
    X(RON_ECOMPRESS, -1022, "malformed compressed payload")                     \
    X(RON_ESTREAM,   -1023, "stream state violation")                           \
    X(RON_ESTORE,    -1024, "storage engine error")                             \
    X(RON_EINVAL,    -1025, "invalid argument")                                 \
    X(RON_EPATHLEN,  -1500, "Unix socket path too long (sun_path holds 108 bytes)") \
    X(RON_EREFUSED,  -1501, "bus peer refused the connection (uid or secret)") \
    X(RON_EKEYFILE,  -2000, "key file malformed or tampered with")               \
    X(RON_EKEYPERM,  -2001, "key file or directory open to others or not ours")   \
    X(RON_EKEYLOCKED, -2002, "key file sealed and its secret is not configured")  \
    X(RON_ENOKEYS,   -2003, "no key store (the node has not created its keys)") \
    X(RON_EADDR,     -1900, "malformed b3 address")                             \
    X(RON_ENAME,     -1901, "malformed name")                                   \
    X(RON_ERECORD,   -1902, "malformed name record")                            \
    X(RON_ENAMESIG,  -1903, "name record signature does not verify")           \
    X(RON_ENAMEOWNER, -1904, "name is bound to another key")                    \
    X(RON_ENAMESTALE, -1905, "name record seq is not above the current one")    \
    X(RON_ENAMEDUP,  -1906, "name record is already the current one")          \
    X(RON_ENAMEFUTURE, -1907, "name record timestamp too far in the future")    \
    X(RON_EIDXFULL,  -1908, "name index is full")                              \
    X(RON_ESTOREFULL, -1800, "insufficient storage: pinned bytes would exceed the store quota") \
    X(RON_EPEERID,   -2700, "peer certificate key does not hash to the expected node id") \
    X(RON_EPEERCERT, -2701, "peer presented no certificate, or not a self-signed Ed25519 one") \
    X(RON_EALPN,     -2702, "peer did not negotiate ALPN oap/1") \
    X(RON_EPEERLIMIT, -2703, "too many sessions with this peer") \
    X(RON_EPEERSELF, -2704, "dialed node id is this node's own") \
    X(RON_EDHTSIG,   -2600, "DHT record signature does not verify")            \
    X(RON_EDHTEXPIRED, -2601, "DHT record expired or dated in the future")     \
    X(RON_EDHTRECORD, -2602, "malformed DHT record")                           \
    X(RON_EDHTBLOB,  -2603, "routing-table blob malformed or corrupted")       \
    X(RON_EDHTLIMIT, -2604, "DHT record limit reached (per key, per peer or total)") \
    X(RON_EREMOTE,   -2300, "the node answered with an error envelope") \
    X(RON_EBADPIECE, -2800, "provider sent a piece that does not verify against the address") \
    X(RON_EPEERERR,  -2801, "provider answered the transfer with an error") \
    X(RON_ERANGE,    -2802, "byte range not satisfiable") \
    X(RON_EPOLICY,   -3100, "policy bundle malformed or invalid") \
    X(RON_EPOLLIMIT, -3101, "policy bundle exceeds a limit") \
    X(RON_EPOLDUP,   -3102, "policy bundle repeats a rule id") \
    X(RON_EPOLNOPREV, -3103, "no previous policy to roll back to") \
    X(RON_EPOLDENY,  -3104, "denied by policy") \
    X(RON_EAUDIT,    -3000, "audit record or checkpoint malformed") \
    X(RON_EAUDITCHAIN, -3001, "audit log fails verification (edited, dropped, reordered or truncated)") \
    X(RON_ECAPFORMAT, -3300, "capability malformed (not a v1 macaroon of ours, or over a limit)") \
    X(RON_ECAPCAVEAT, -3301, "capability caveat malformed or with an unknown key") \
    X(RON_ECAPKID,   -3302, "capability names a root key this node does not hold") \
    X(RON_ECAPSIG,   -3303, "capability signature does not verify") \
    X(RON_ECAPREVOKED, -3304, "capability revoked") \
    X(RON_ECAPEXPIRED, -3305, "capability expired or not yet valid") \
    X(RON_ECAPDENY,  -3306, "capability does not allow this request") \
    X(RON_ECAPFULL,  -3307, "revocation set full") \
    X(RON_EREGDESC,  -3400, "registry descriptor or proposal malformed") \
    X(RON_EREGLIMIT, -3401, "registry descriptor exceeds a limit") \
    X(RON_EREGSIG,   -3402, "registry approval signature does not verify") \
    X(RON_EREGSIGNER, -3403, "approval from a key that is not a signer in force") \
    X(RON_EREGREVOKED, -3404, "approval from a revoked signer") \
    X(RON_EREGDUP,   -3405, "this signer already approved the proposal") \
    X(RON_EREGQUORUM, -3406, "fewer valid approvals than the signer threshold") \
    X(RON_EREGSTALE, -3407, "proposal base is not the registry head (stale)") \
    X(RON_EREGCHAIN, -3408, "registry log fails verification (edited, dropped, reordered or truncated)") \
    X(RON_EREGRDONLY, -3409, "registry is read-only: writes refused") \
    X(RON_EREGFULL,  -3410, "registry log or proposal table full") \
    X(RON_EPASSFOREIGN, -3500, "passport challenge not issued by this node") \
    X(RON_EPASSREPLAY, -3501, "passport challenge already redeemed") \
    X(RON_EPASSEXPIRED, -3502, "passport challenge expired") \
    X(RON_EPASSSIG,  -3503, "passport response not signed by the key it names") \
    X(RON_EPASSDENY, -3504, "policy denies the key a requested operation") \
    X(RON_EPASSKEYRING, -3505, "passport keyring malformed, tampered with or under another seal") \
    X(RON_EPASSREQ,  -3506, "passport request malformed") \
    X(RON_ECAPNEEDED, -3600, "a capability is required for this request") \
    X(RON_ECAPDEPTH, -3601, "capability minted from too long a chain of mints (lineage limit)")

enum {
#define RON_ERR_ENUM(name, val, msg) name = (val),
    RON_ERRNO_MAP(RON_ERR_ENUM)
#undef RON_ERR_ENUM
};

/* Describe rc (a -errno or a RON_E* code). Never returns NULL. */
const char *ron_strerror(int rc);

/* Short stable name of rc ("RON_EPROTO", "ENOENT") for logs and metrics labels. */
const char *ron_errname(int rc);

#endif

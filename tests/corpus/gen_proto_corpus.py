#!/usr/bin/env python3
"""Generate the seed corpus of fuzz_proto_dto (tests/corpus/proto_dto/).

Each seed is one byte choosing the DTO (0 error envelope, 1 HELLO, 2 HELLO
reply, 3 START, 4 response metadata, 5 credit) followed by the JSON text.
Valid documents and one seed per strict-decoding rejection. Rewrites the folder.
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "proto_dto")
OKE = '"message":"m","retryable":false,"corr_id":"1"'
REPLY = '"max_frame":1048576,"max_inflight":64,"flags_supported":255,"versions":[1]'

SEEDS = [
    (0, '{"code":"not_found","message":"m","retryable":false,"corr_id":"18446744073709551615"}'),
    (0, '{"code":"quota_exhausted","message":"","retryable":true,"corr_id":"1","retry_after_ms":1500}'),
    (0, '{"code":"payload_too_large","message":"x","retryable":false,"corr_id":"0","reason":"compression_bomb"}'),
    (0, '{"code":"not_found",' + OKE + ',"extra":1}'),
    (0, '{"code":"not_found","code":"conflict",' + OKE + '}'),
    (0, '{"code":"nope",' + OKE + '}'),
    (0, '{"code":404,' + OKE + '}'),
    (0, '{"code":"not_found","message":"m","retryable":false,"corr_id":"007"}'),
    (0, '{"code":"not_found","message":"m","retryable":false,"corr_id":1}'),
    (0, '{"code":"not_found","message":"m","retryable":false,"corr_id":"18446744073709551616"}'),
    (0, '{"code":"not_found","message":"m","retryable":"no","corr_id":"1"}'),
    (0, '{"code":"not_found",' + OKE + ',"retry_after_ms":1.5}'),
    (0, '[1,2,3]'),
    (0, '{"code":'),
    (0, ''),
    (1, '{"ua":"ron/0.1","max_frame":65536}'),
    (1, '{"ua":null}'),
    (1, '{"versions":[1,2],"pq_hybrid":true}'),
    (1, '{"max_frame":1e6}'),
    (1, '{"versions":[1,2,3,4,5,6,7,8,9]}'),
    (1, '{"versions":["1"]}'),
    (1, '{"ua":"a","ua":"b"}'),
    (2, '{' + REPLY + ',"transports":["tcp+tls"]}'),
    (2, '{' + REPLY + ',"transports":["tcp+tls"],"future":{"x":[1]}}'),
    (2, '{' + REPLY + '}'),
    (2, '{' + REPLY + ',"transports":"tcp"}'),
    (2, '{"max_frame":1048576,"max_inflight":64,"versions":[1],"transports":[]}'),
    (3, '{"op":"get","addr":"b3:00","range":[0,65535]}'),
    (3, '{"op":"put","meta":{"a":[1,{"b":null}]}}'),
    (3, '{"op":"get","x":0.5}'),
    (3, '{"op":"Get!"}'),
    (3, '{"addr":"x"}'),
    (4, '{"size":"9007199254740993","content_type":"text/plain"}'),
    (4, '{"size":12}'),
    (4, '{"size":"1","etag":"x"}'),
    (5, '{"op":"credit","frames":16}'),
    (5, '{"op":"credit","frames":0}'),
    (5, '{"op":"credit","frames":65536}'),
    (5, '{"op":"ping","frames":1}'),
]


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        os.unlink(os.path.join(OUT, f))
    for i, (kind, text) in enumerate(SEEDS):
        with open(os.path.join(OUT, "seed_%02d" % i), "wb") as fh:
            fh.write(bytes([kind]) + text.encode())
    print("wrote %d seeds to %s" % (len(SEEDS), OUT))


if __name__ == "__main__":
    main()

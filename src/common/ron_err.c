/*
 * ron_err.c - names and messages of error codes.
 */
#include "ron_err.h"

#include <string.h>
#include <uv.h>

const char *
ron_strerror(int rc)
{
    switch (rc) {
#define RON_ERR_CASE(name, val, msg) case name: return msg;
        RON_ERRNO_MAP(RON_ERR_CASE)
#undef RON_ERR_CASE
    case 0:
        return "success";
    default:
        return rc < 0 && rc > -4096 ? uv_strerror(rc) : "unknown error";
    }
}

const char *
ron_errname(int rc)
{
    switch (rc) {
#define RON_ERR_NAME(name, val, msg) case name: return #name;
        RON_ERRNO_MAP(RON_ERR_NAME)
#undef RON_ERR_NAME
    case 0:
        return "OK";
    default:
        return rc < 0 && rc > -4096 ? uv_err_name(rc) : "UNKNOWN";
    }
}

/*
 * ryker_internal.h - shared between ryker.c and ryker_uv.c only.
 */
#ifndef RYKER_INTERNAL_H
#define RYKER_INTERNAL_H

#include <stdbool.h>

#include "ryker.h"

/* Bind (or with NULL unbind) the consumer's async handle, under the
 * mailbox's mutex, so no producer signals a handle being closed. Returns true
 * if the consumer has work now (see ryk__mailbox_has_work). */
bool ryk__mailbox_bind(ryk_mailbox_t *mb, uv_async_t *async);

/* True if the consumer has work: messages queued, or a close that recv has
 * not reported yet. */
bool ryk__mailbox_has_work(ryk_mailbox_t *mb);

#endif

/*
 * oap_internal.h - helpers shared by the files of src/oap/ and its tests only.
 */
#ifndef OAP_INTERNAL_H
#define OAP_INTERNAL_H

#include <stdint.h>

/* max_frame clamped to the spec's 1 MiB ceiling. */
uint32_t oap__limit(uint32_t max_frame);

#endif

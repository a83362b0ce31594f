/*
 * bus_overflow_broken_block.pml - deliberately broken variant of bus_overflow.pml, checked by
 * models/check.sh with EXPECT=fail so we know the model check bites.
 * BROKEN_BLOCK: the publisher waits for room in the slowest subscriber; with a stuck subscriber it never finishes (LTL publisher_finishes).
 */
#define BROKEN_BLOCK 1
#include "bus_overflow.pml"

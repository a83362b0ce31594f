/*
 * bus_overflow_broken.pml - deliberately broken variant of bus_overflow.pml, checked by
 * models/check.sh with EXPECT=fail so we know the model check bites.
 * BROKEN_THROTTLE: the overflow report's check and update of report_next are two steps, not one CAS; spin must find two reports in one interval.
 */
#define BROKEN_THROTTLE 1
#include "bus_overflow.pml"

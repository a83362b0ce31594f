/*
 * supervisor_broken.pml - deliberately broken variant of supervisor.pml, checked by
 * models/check.sh with EXPECT=fail so we know the model check bites.
 * BROKEN_WINDOW: old crashes never leave the window; spin must find a quarantine at a 6th crash spread over more than the window.
 */
#define BROKEN_WINDOW 1
#include "supervisor.pml"

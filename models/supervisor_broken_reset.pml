/*
 * supervisor_broken_reset.pml - deliberately broken variant of supervisor.pml, checked by
 * models/check.sh with EXPECT=fail so we know the model check bites.
 * BROKEN_RESET: the backoff never resets after healthy running; spin must find a delay longer than the rule allows.
 */
#define BROKEN_RESET 1
#include "supervisor.pml"

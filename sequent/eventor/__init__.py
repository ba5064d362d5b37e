"""The Eventor engine: events, steps, containers and associations, run durably against a store.

``sequent`` builds on this layer; it can be used directly too::

    ev = Eventor(store=':memory:')
    go = ev.add_event('go')
    done = ev.add_event('done')
    ev.add_step('s1', func=print, args=('hello',), triggers={STEP_SUCCESS: (done,)})
    ev.add_assoc(go, 's1')
    ev.trigger_event(go, 1)
    ev.run()
"""

from .conditions import And, Condition, Or, Ref, and_, or_
from .context import TaskContext, current_task
from .engine import Eventor, new_run_id
from .errors import ConfigError, ConfigWarning, EventorError
from .model import RunMode, StepReplay, StepStatus, TaskConstruct

STEP_READY = StepStatus.ready
STEP_ACTIVE = StepStatus.active
STEP_SUCCESS = StepStatus.success
STEP_FAILURE = StepStatus.failure
STEP_COMPLETE = StepStatus.complete
STEP_RERUN = StepReplay.rerun
STEP_SKIP = StepReplay.skip
RUN_RESTART = RunMode.restart
RUN_RECOVER = RunMode.recover
RUN_CONTINUE = RunMode.continue_

__all__ = [
    "Eventor", "EventorError", "ConfigError", "ConfigWarning", "TaskContext", "current_task", "new_run_id",
    "Condition", "Ref", "And", "Or", "or_", "and_",
    "StepStatus", "StepReplay", "RunMode", "TaskConstruct",
    "STEP_READY", "STEP_ACTIVE", "STEP_SUCCESS", "STEP_FAILURE", "STEP_COMPLETE", "STEP_RERUN", "STEP_SKIP",
    "RUN_RESTART", "RUN_RECOVER", "RUN_CONTINUE",
]

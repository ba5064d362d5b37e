"""sequent: declare a flow of steps, run it fast and durably, and recover a failed run.

::

    import sequent as seq

    flow = seq.Sequent()
    s1 = flow.add_step('s1', func=extract)
    s2 = flow.add_step('s2', func=load, requires=((s1, seq.STEP_SUCCESS),))
    flow.run()
"""

from ._version import __version__
from .errors import NoRunError, SequentError
from .eventor.errors import FlowChangedWarning
from .eventor import (RUN_CONTINUE, RUN_RECOVER, RUN_RESTART, STEP_ACTIVE, STEP_COMPLETE, STEP_FAILURE,
                      STEP_READY, STEP_RERUN, STEP_SKIP, STEP_SUCCESS, RunMode, StepReplay, StepStatus)
from .flow import Sequent
from .resources import Resource, ResourcePool
from .runs import AttemptInfo, RunDetail, RunInfo, TaskInfo, list_runs, run_detail, run_tasks
from .tree import Event, Step, and_, or_

STP_RERUN = STEP_RERUN  # the seed's spelling
STP_SKIP = STEP_SKIP  # the seed's spelling

__all__ = [
    "__version__", "Sequent", "SequentError", "FlowChangedWarning", "Step", "Event", "or_", "and_",
    "list_runs", "run_tasks", "run_detail", "RunInfo", "TaskInfo", "RunDetail", "AttemptInfo", "NoRunError", "Resource", "ResourcePool",
    "StepStatus", "StepReplay", "RunMode",
    "STEP_READY", "STEP_ACTIVE", "STEP_SUCCESS", "STEP_FAILURE", "STEP_COMPLETE",
    "STEP_RERUN", "STEP_SKIP", "STP_RERUN", "STP_SKIP", "RUN_RESTART", "RUN_RECOVER", "RUN_CONTINUE",
]

"""The errors users of the facade see."""

from .eventor.errors import EventorError
from .eventor.errors import NoRunError as _EngineNoRunError


class SequentError(EventorError):
    """A flow that cannot be built or run as given; the text names the step and what is wrong."""


class NoRunError(SequentError, _EngineNoRunError):
    """No run where one was named or looked for: no store, no such run_id, or no run of the flow."""

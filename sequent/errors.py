"""The error users of the facade see."""

from .eventor.errors import EventorError


class SequentError(EventorError):
    """A flow that cannot be built or run as given; the text names the step and what is wrong."""

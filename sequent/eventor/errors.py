"""Errors raised by the engine."""


class EventorError(Exception):
    """A program that cannot run as given, or a store that cannot serve it; the text says which."""


class ConfigError(EventorError, ValueError):
    """A configuration value of the wrong type or form; the text names the key."""


class ConfigWarning(UserWarning):
    """A configuration key that the engine does not know (probably a typo); it is ignored."""


class FlowChangedWarning(UserWarning):
    """A recovery runs a flow whose steps differ from the run's: tasks match by name and sequence."""


class NoRunError(EventorError):
    """No run where one was named or looked for (no store, no such run_id, no run of the flow)."""

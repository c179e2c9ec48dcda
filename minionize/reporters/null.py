"""The default reporter: reports nothing."""

from .base import Reporter


class NullReporter(Reporter):
    pass

"""The demo's one error of its own (everything else is the library's ``SagaError``)."""


class DemoUsageError(Exception):
    """The demo was asked for something it will not do: a work folder it did not make,
    or a record count outside what its corpus and fault plan allow."""

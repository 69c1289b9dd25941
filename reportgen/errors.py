"""The project's exception family; only the command line turns these into exit codes."""


class ReportgenError(Exception):
    """Base of every error reportgen reports to a user as one line."""

    exit_code = 1


class InputError(ReportgenError):
    """Bad input: a model, weights, image or option reportgen cannot use."""

    exit_code = 2


class DatasetUnavailableError(ReportgenError):
    """A data set that is not on this machine and cannot be downloaded."""

    exit_code = 3


class OutputError(ReportgenError):
    """The output folder cannot be written."""

    exit_code = 4


class BuildInterrupted(ReportgenError):
    """The user interrupted a build (Ctrl-C: exit 130, SIGTERM: 143); the previous site is left as it was."""

    exit_code = 130

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code

"""Typed errors. Each carries a one-line message that says what is wrong and what to do.

The CLI prints ``str(error)`` and exits non-zero; a traceback appears only with ``--verbose``.
"""


class AccelcError(Exception):
    """Base class for every error accelc raises on purpose."""

    exit_code = 1


class UserInputError(AccelcError):
    """The user's files, model or arguments are not usable as given."""

    exit_code = 2


class ModelLoadError(UserInputError):
    """model.py could not be read into (module, inputs)."""


class ModelRunError(UserInputError):
    """The model raised when run on its own example inputs."""


class PassRegistryError(AccelcError):
    """The pass registry is inconsistent (duplicate names, unknown pass, bad plugin)."""

    exit_code = 2


class ArtifactError(AccelcError):
    """An artifact folder is missing, incomplete, corrupt or would overwrite something."""

    exit_code = 2


class InputMismatchError(UserInputError, TypeError):
    """A call of an accelerated module with inputs outside the signature it was verified for."""


class AccelcFallbackWarning(UserWarning):
    """accelc answered a call with a slower, correct path (the eager model), and says why."""

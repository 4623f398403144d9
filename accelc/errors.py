"""Typed errors. Each carries a one-line message that says what is wrong and what to do.

The CLI prints ``str(error)`` and exits with the error's code; a traceback appears only with
``--verbose``. Each code means one thing:

    0  done
    1  another accelc error
    2  usage: a bad argument, path, output folder or artifact
    3  an internal error (an accelc bug: please report it, with --verbose's traceback)
    4  the model: its file does not load, or it raises on its own example inputs
    5  not captured: torch.export could not capture the model, so there is nothing optimised to save
    6  not verified: the optimised model disagreed with eager, so there is nothing optimised to save
  130  interrupted
"""


class AccelcError(Exception):
    """Base class for every error accelc raises on purpose."""

    exit_code = 1


class UserInputError(AccelcError):
    """The user's files, model or arguments are not usable as given."""

    exit_code = 2


class ModelLoadError(UserInputError):
    """model.py could not be read into (module, inputs)."""

    exit_code = 4


class ModelRunError(UserInputError):
    """The model raised when run on its own example inputs."""

    exit_code = 4


class NotCapturedError(AccelcError):
    """The model could not be captured, so nothing optimised exists to save."""

    exit_code = 5


class NotVerifiedError(AccelcError):
    """The optimised model disagreed with eager, so nothing optimised exists to save."""

    exit_code = 6


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

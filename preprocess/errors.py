"""The project's error hierarchy.

It lives in the lowest layer so that preprocessors, models and pipelines can all raise the same
errors, and the CLI can turn every one of them into a single line and exit code 1.
"""

import os
import sys
import warnings

#: Where this package's files are (frames there are skipped when a warning is located).
PACKAGE_FOLDER = os.path.dirname(os.path.abspath(__file__))


class ConvpipeError(Exception):
    """A known, user-facing failure: bad data, bad options, an incomplete run directory."""


class SettingError(ConvpipeError):
    """A setting out of its range or of the wrong type, named by its field (`batch_size`).

    The message names the command-line flag (`--batch-size must be ...`); where the value came
    from a config file instead, the CLI names the file and key (`run.toml: [train] batch_size`).
    """

    def __init__(self, name: str, reason: str, *, flag: bool = True):
        self.name = name
        self.reason = reason
        super().__init__(f"{'--' + name.replace('_', '-') if flag else name} {reason}")

    def __reduce__(self):  # pickled with its own arguments, so it reaches a process pool's caller intact
        return _rebuild_setting_error, (self.name, self.reason, str(self))


def _rebuild_setting_error(name: str, reason: str, message: str) -> SettingError:
    error = SettingError(name, reason)
    error.args = (message,)  # as it was raised, with or without the flag's dashes
    return error


def one_line(text: str) -> str:
    """`text` with newlines and other unprintable characters escaped (`\\n`), so that a file
    named with a newline still makes a one-line message."""
    return "".join(char if char.isprintable() else _escaped(char) for char in str(text))


def _escaped(char: str) -> str:
    # a file name's byte that is not UTF-8 (read as a lone surrogate) shows as that byte
    return f"\\x{ord(char) - 0xDC00:02x}" if 0xDC80 <= ord(char) <= 0xDCFF else repr(char)[1:-1]


class InputError(ConvpipeError, ValueError):
    """One input (a file, bytes or a decoded object) cannot be turned into an array.

    The message names the input and the reason in one line, e.g.
    ``clips/yes_01.wav: not a readable audio file (Format not recognised)``.
    Pipelines catch it per input, skip the input and report it.
    """

    def __init__(self, source: str, reason: str):
        self.source = source
        self.reason = reason
        super().__init__(f"{one_line(source)}: {one_line(reason)}")

    def __reduce__(self):  # unpickled as InputError(message), it broke a multiprocessing pool
        return type(self), (self.source, self.reason)


class InputWarning(UserWarning):
    """An input was used, but not exactly as given (e.g. decoded with a fallback encoding).

    Issued with `warnings.warn`, so preprocessors stay stateless; pipelines record and count
    these per input. The message names the input first, like `InputError`.
    """


def warn_input(message: str) -> None:
    """Issue an `InputWarning` located at the first caller outside this package (a user's line,
    not a preprocessor's internals), as Python 3.12's `skip_file_prefixes` would."""
    frame, level = sys._getframe(1), 1
    while frame is not None and in_package(frame.f_code.co_filename):
        frame, level = frame.f_back, level + 1
    warnings.warn(InputWarning(message), stacklevel=level + 1)


def in_package(filename: str) -> bool:
    """Whether code of `filename` is this package's: a file inside its folder, not one of a
    folder that only starts alike ("preprocess_tools/"), nor "<string>" or "<stdin>", which
    `abspath` would place in the working directory."""
    if filename.startswith("<"):
        return False
    return os.path.abspath(filename).startswith(PACKAGE_FOLDER + os.sep)


class FitError(ConvpipeError, ValueError):
    """The training inputs leave nothing to fit with these settings (a `min_count` above every
    token's count): a ValueError to library code, one line to the CLI."""


class NotFittedError(ConvpipeError, ValueError):
    """A preprocessor that must learn from training data was used before `fit`."""

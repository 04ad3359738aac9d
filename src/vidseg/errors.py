"""The one exception type that vidseg raises for problems a user can fix (bad input, bad config)."""

# How PyTorch's DataLoader re-raises an exception from a worker process: the worker's whole traceback becomes
# the message, and the original message is the text after the last line naming the exception type.
_WORKER_PREFIX = "Caught VidsegError in DataLoader worker process"
_ORIGINAL_LINE = "\nvidseg.errors.VidsegError: "


class VidsegError(Exception):
    """A problem with the user's input, files or configuration.

    The message names the file, frame or key, what was expected, what was found and what to do.
    The command line prints it without a traceback and exits with status 2.
    """


def user_message(error: VidsegError) -> str:
    """The message to show for ``error``: its own text, without the traceback that a DataLoader worker wraps
    around it."""
    message = str(error)
    if message.startswith(_WORKER_PREFIX) and _ORIGINAL_LINE in message:
        return message.rsplit(_ORIGINAL_LINE, 1)[1].strip()
    return message


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM (what schedulers and ``timeout`` send), so
    that it unwinds like an interrupt by Ctrl-C: every ``with`` block and ``finally`` removes its temporary
    files. A KeyboardInterrupt, so that ``except Exception`` never swallows it."""


class TerminationRequest:
    """Whether SIGTERM has arrived. The CLI's handler raises Terminated where the signal lands, but C extensions
    that call back into Python can swallow that exception (seen once in about 35 tries, inside NumPy during
    SynthCity rendering); long loops therefore also check this record between items."""

    requested = False

    @classmethod
    def check(cls) -> None:
        """Raise Terminated if SIGTERM has arrived."""
        if cls.requested:
            raise Terminated()


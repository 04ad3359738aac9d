"""The one exception type that vidseg raises for problems a user can fix (bad input, bad config)."""


class VidsegError(Exception):
    """A problem with the user's input, files or configuration.

    The message names the file, frame or key, what was expected, what was found and what to do.
    The command line prints it without a traceback and exits with status 2.
    """

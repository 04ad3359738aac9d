"""One module per ``vidseg`` sub-command; see ``vidseg.cli``."""

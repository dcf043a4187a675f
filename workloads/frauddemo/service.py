"""The detection service's app factory moved to frauddemo.web.app; this name stays for the command line
(cli.py's `frauddemo detector`) until it imports from there."""
from .web.app import STATIC, create_app  # noqa: F401

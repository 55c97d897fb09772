"""The Access Tokens web page: sign in with a password, list, add and delete your tokens.

``e6auth serve --http-port N`` serves it beside the gateway, in the same process and on the same
:class:`~e6auth.verify.authenticator.Authenticator`, token store and throttle.
"""

from e6auth.web.app import build_app
from e6auth.web.server import WebServer

__all__ = ["WebServer", "build_app"]

"""One Settings object: constructor keywords (the command's flags) > ``E6AUTH_*`` environment >
the TOML config file (``E6AUTH_CONFIG``, else ``<home>/config.toml``) > defaults.

Read once, when a Settings is built; nothing reads the environment on the request path. The
model (its declarations, checks and ``build_*`` methods) is :mod:`e6auth.settings.model`; where
values come from, :mod:`~e6auth.settings.sources`; the checks of single values,
:mod:`~e6auth.settings.values`; the parts several settings describe together,
:mod:`~e6auth.settings.parts`.

Exported lazily (PEP 562): the store reads a file name and ``safe_url`` from the light modules
here without the model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from e6auth._exports import lazy_exports

if TYPE_CHECKING:
    # The names besides SecretStr, Settings and default_home were importable from here when the
    # settings were one module; their callers keep importing them from here.
    from e6auth.credentials.peppers import PEPPER_FILE as PEPPER_FILE
    from e6auth.settings.conversions import SecretStr
    from e6auth.settings.model import Settings
    from e6auth.settings.parts import SESSION_KEY_FILE as SESSION_KEY_FILE
    from e6auth.settings.sources import DATABASE_FILE as DATABASE_FILE
    from e6auth.settings.sources import ENV_PREFIX as ENV_PREFIX
    from e6auth.settings.sources import QUERY_DATABASE_FILE as QUERY_DATABASE_FILE
    from e6auth.settings.sources import NoDecode as NoDecode
    from e6auth.settings.sources import default_home
    from e6auth.settings.values import LOCAL_HOST_NAMES as LOCAL_HOST_NAMES
    from e6auth.settings.values import safe_url as safe_url

__all__ = ["SecretStr", "Settings", "default_home"]

_EXPORTS = {
    "SecretStr": "e6auth.settings.conversions",
    "Settings": "e6auth.settings.model",
    "default_home": "e6auth.settings.sources",
    "PEPPER_FILE": "e6auth.credentials.peppers",
    "SESSION_KEY_FILE": "e6auth.settings.parts",
    "DATABASE_FILE": "e6auth.settings.sources",
    "QUERY_DATABASE_FILE": "e6auth.settings.sources",
    "ENV_PREFIX": "e6auth.settings.sources",
    "NoDecode": "e6auth.settings.sources",
    "LOCAL_HOST_NAMES": "e6auth.settings.values",
    "safe_url": "e6auth.settings.values",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)

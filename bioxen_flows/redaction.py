"""Secrets masked wherever BioXen writes text: log lines, error messages, settings output.

Known secrets (the database password, the XCP-ng password once read) are registered once
and replaced by ``***``; database URLs and DSNs are masked by form, so a password nobody
registered is masked too. A bottom-layer module: settings, the store and the XCP-ng client
register secrets here without importing logging configuration.
"""

from __future__ import annotations

import re
import threading

MASK = "***"
_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Mask ``value`` in every log line from now on (short values would mask too much)."""
    if value and len(value) >= 4:
        with _secrets_lock:
            _secrets.add(value)


# a URL's userinfo: greedy up to the LAST "@" before the host (an unescaped "@" may be in
# the password), "user:" kept
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/?#@]*):[^\s/?#]*@")
# ?password=, &sslpassword=, and libpq's key=value form (quoted or not); passfile is a path
_PASSWORD_PARAM = re.compile(
    r"(?i)(?<![a-z0-9_])((?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'?|\"[^\"]*\"?|[^\s&;,'\")]*)")


def mask_url(text: str) -> str:
    """`text` with every database password masked, in any URL or DSN form in it:
    ``user:pw@host`` (also with "@" or "%40" in the password), ``?password=``,
    ``&sslpassword=``, libpq ``password=... host=...``. The one place that does this: the
    settings, doctor and db commands, log lines and error messages all go through it."""
    text = _USERINFO.sub(rf"\1:{MASK}@", text)
    return _PASSWORD_PARAM.sub(rf"\1{MASK}", text)


def url_passwords(url: str) -> set[str]:
    """The passwords written in a database URL or DSN, as written and unescaped (what a
    driver may echo), so that `redact` masks them wherever they appear."""
    from urllib.parse import unquote

    found: set[str] = set()
    userinfo = re.search(r"(?i)\b[a-z][a-z0-9+.-]*://[^\s:/?#@]*:([^\s/?#]*)@", url)
    if userinfo:  # a driver that splits at the first "@" echoes the rest as the host
        password = userinfo.group(1)
        found.update(password.split("@", i)[-1] for i in range(password.count("@") + 1))
    for match in _PASSWORD_PARAM.finditer(url):
        found.add(match.group(2).strip("'\""))
    return {form for value in found for form in (value, unquote(value)) if form}


def redact(text: str) -> str:
    """`text` with known secrets and any database password (`mask_url`) masked."""
    with _secrets_lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, MASK)
    return mask_url(text)

"""One redaction for every URL the kit shows or publishes (broker, camera, stream).

Credentials ride inside URLs (`rtsp://admin:secret@cam/x`, `http://cam/video?password=x`);
logs, `--check`, the retained `info` message and `stats` must carry the URL without them.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, unquote_plus, urlsplit

MASK = "***"
_SECRET_KEY = re.compile(r"pass|pwd|secret|token|key|auth|sig|cred", re.I)


def redact_url(url: str) -> str:
    """The URL with its password and any secret-looking query value replaced by ***.

    `rtsp://admin:secret@cam:554/x?token=t` -> `rtsp://admin:***@cam:554/x?token=***`.
    Strings that are not URLs (paths, `cv:0`) come back unchanged.
    """
    if "://" not in url:
        return url
    try:
        u = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket: mask everything between // and @
        return re.sub(r"//[^/?#]*@", f"//{MASK}@", url)
    netloc = u.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:{MASK}@{hostport}"
    query = "&".join(_redact_pair(pair) for pair in u.query.split("&")) if u.query else u.query
    return u._replace(netloc=netloc, query=query).geturl()


def url_secrets(url: str) -> set[str]:
    """What redact_url hides in `url` (password, secret query values), as written and percent-decoded."""
    if "://" not in url:
        return set()
    try:
        u = urlsplit(url)
    except ValueError:
        m = re.search(r"//([^/?#]*)@", url)
        found = {m.group(1)} if m else set()
    else:
        userinfo, at, _ = u.netloc.rpartition("@")
        found = {userinfo.partition(":")[2]} if at and ":" in userinfo else set()
        for pair in u.query.split("&") if u.query else ():
            key, eq, value = pair.partition("=")
            if eq and value and _SECRET_KEY.search(key):
                found.add(value)
    return {form for s in found for form in (s, unquote(s), unquote_plus(s)) if form}


def scrub(text: str, url: str) -> str:
    """A third party's message with `url`'s credentials replaced by ***, however it quotes them
    (the whole URL, the password alone, encoded or decoded)."""
    text = text.replace(url, redact_url(url))
    for secret in sorted(url_secrets(url), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def _redact_pair(pair: str) -> str:
    key, eq, value = pair.partition("=")
    return f"{key}={MASK}" if eq and value and _SECRET_KEY.search(key) else pair

"""Which shard URLs sslflow opens: local paths and http(s):// always, ``pipe:`` commands only
when the user asked for them.

webdataset's ``gopen`` runs a ``pipe:`` URL as a shell command. A URL that arrives inside data
(a line of a URL list in the inbox, a shard name in a manifest) must never do that, so every
URL passes :func:`check_url` before it is opened, and ``pipe:`` needs ``allow_pipe``: an
explicit setting (``--allow-pipe``, ``allow_pipe: true`` on ``raw_shards``/``eval_split``)
that only the user's own command line or configuration sets, never an inbox entry. Other
schemes ``gopen`` knows (gs://, sftp://, ais://, …) run helper programs and are refused too;
``pipe:`` reaches those stores when the user allows it.
"""

from __future__ import annotations

from sslflow.data.samples import SourceError

PIPE_PREFIX = "pipe:"
OPEN_SCHEMES = ("http://", "https://", "file://")
ALLOW_PIPE_HINT = (
    "pipe: commands run only when you ask for them yourself: pass --allow-pipe (or set "
    "allow_pipe: true on raw_shards / eval_split) with a --path you wrote; URL lists in the "
    "inbox never run commands"
)


class UrlRefused(SourceError):
    """A URL sslflow will not open; the message names it, where it came from, and the fix."""


def check_url(url: str, allow_pipe: bool = False, where: str = "") -> str:
    """``url`` itself when sslflow may open it.

    Args:
        url: a local path, ``file://``, ``http(s)://`` URL or ``pipe:`` command.
        allow_pipe: the user asked for ``pipe:`` commands in their own configuration.
        where: where the URL was read (``list.txt:3``), named in the error.

    Raises:
        UrlRefused: a ``pipe:`` command without ``allow_pipe``, another scheme, or a URL
            holding control characters (a newline would start another shell command).
    """
    origin = f" (from {where})" if where else ""
    if any(ord(c) < 32 or ord(c) == 127 for c in url):
        raise UrlRefused(f"shard URL {url!r}{origin} holds control characters")
    if url.startswith(PIPE_PREFIX):
        if allow_pipe:
            return url
        raise UrlRefused(f"refused the pipe: URL {url!r}{origin}: {ALLOW_PIPE_HINT}")
    scheme, separator, _ = url.partition("://")
    if separator and not url.startswith(OPEN_SCHEMES) and "/" not in scheme:
        raise UrlRefused(
            f"unsupported shard URL {url!r}{origin}: shards are read from local paths and "
            "http(s):// URLs; for another store, use a pipe: command with --allow-pipe"
        )
    return url

"""Everything a script can make Python import, imported once when a worker starts.

A script never triggers an import itself, but the standard library does on its behalf:
``Counter.most_common`` imports ``heapq``, ``time.strptime``/``datetime.strptime`` import
``_strptime`` (from C), ``urlsplit`` of a non-ASCII netloc imports ``unicodedata``, and
``bytes.decode("cp1251")`` imports its codec module. After start-up the worker has dropped
its privileges and may no longer be able to read the interpreter's files, so such a lazy
import would fail in the middle of a script ("No module named 'heapq'"); and even where it
could read them, loading files on a script's behalf is work the sandbox should not do.

:data:`PRELOAD` is the one list of what to import (the template process, or a spawned
worker, calls :func:`preload` before any worker hardens itself);
``tests/sandbox/test_preload.py`` derives the lazy imports reachable from every facade and
fails when one is neither here nor in :data:`NOT_PRELOADED`.
"""

from __future__ import annotations

import importlib
import pkgutil

#: the modules scripts may import (SPEC §4; their facades are in :mod:`sandbox.facades`)
ALLOWED_STDLIB = [
    "json",
    "re",
    "datetime",
    "time",
    "math",
    "hashlib",
    "hmac",
    "base64",
    "urllib.parse",
    "uuid",
    "decimal",
    "random",
    "string",
    "itertools",
    "functools",
    "collections",
]

#: what functions of those modules import lazily, on first use
LAZY_IMPORTS = [
    "heapq",  # collections.Counter.most_common
    "_strptime",  # time.strptime, datetime.datetime.strptime (imported from C)
    "unicodedata",  # urllib.parse.urlsplit of a non-ASCII netloc
    "_md5",  # hashlib's fallbacks when OpenSSL lacks an algorithm
    "_sha1",
    "_sha256",
    "_sha512",
    "_sha3",
    "_blake2",
]

#: lazy imports reachable only from code scripts cannot call (the test checks this list)
NOT_PRELOADED = {
    "subprocess": "uuid's MAC-address lookup (uuid1/getnode are not in the facade)",
    "getopt": "base64.main, the command line",
    "pwd": "os.path.expanduser, never called by a facade function",
    "traceback": "warnings' message formatting, which tolerates the import failing",
    "tracemalloc": "warnings' message formatting, which tolerates the import failing",
}

PRELOAD: list[str] = [*ALLOWED_STDLIB, *LAZY_IMPORTS]

#: codec modules that only exist on Windows
_WINDOWS_CODECS = frozenset({"mbcs", "oem"})


def codec_modules() -> list[str]:
    """Every codec module of ``encodings``: ``str.encode``/``bytes.decode`` import them by
    name on first use, and vendors answer in cp1251, koi8-r, shift_jis ..."""
    import encodings

    return [
        f"encodings.{info.name}"
        for info in pkgutil.iter_modules(encodings.__path__)
        if info.name not in _WINDOWS_CODECS
    ]


def preload() -> None:
    """Import :data:`PRELOAD` and every codec module (before the worker hardens itself)."""
    for name in [*PRELOAD, *codec_modules()]:
        importlib.import_module(name)

"""Compiled code kept by the pool, per source, and shipped to fresh workers as ``marshal``.

With one worker per isolation key, every tenant's first call lands in a fresh process that
has nothing cached; recompiling the same stored version there for each tenant would cost a
RestrictedPython compile per switch. So the pool keeps the byte code of each source it has
seen run, and a fresh worker receives it instead of the source.

Why this is safe although the protocol is JSON-only "on purpose":

* the rule protects the **host** from the **worker**: the host never unpickles or
  unmarshals anything a worker sends. Here data flows the other way only — the host
  marshals code *it* compiled and the worker loads it. ``marshal.loads`` of crafted bytes
  could crash the loading process, but the bytes come from the trusted side, and the worker
  already trusts everything the host sends it (its source, its settings);
* code is never learnt from a worker (a worker that escaped RestrictedPython could forge
  byte code for other tenants' workers): the parent compiles it itself with the same
  :func:`~sandbox.compiler.compile_script` the worker would have run (the RestrictedPython
  transform and policy are the same; the result is the same code object);
* the parent compiles a source only after a worker compiled and ran it **within the
  invocation's limits** — a parser bomb fails there first, as the script's problem, and
  never reaches the host's compiler (which, like the host's upload validation, is hardened
  against hostile source anyway: size and nesting caps, ``RecursionError`` caught);
* byte code is interpreter-specific: it is shipped only to workers whose hello reports the
  host's own ``importlib.util.MAGIC_NUMBER`` (a pool started with another ``python`` gets
  sources, as before).

Why not the alternative — compile known versions in the template before it forks, so that
children inherit the code objects: every worker would then hold the code of every module
the pool has run, and a worker that escaped RestrictedPython could read other integrators'
modules. Shipping gives a worker the code of its own isolation key only.

Cost: one compile in the parent per source (~3 ms for the SendGrid module on a quiet
machine, once per stored version and pool) and a base64 marshal in the first ``run`` frame
of each fresh worker; the worker's ``marshal.loads`` replaces its compile.
"""

from __future__ import annotations

import base64
import importlib.util
import marshal
import threading
from collections import OrderedDict

from sandbox.compiler import compile_script

#: sources whose byte code is kept (LRU)
MAX_ENTRIES = 256
#: the byte-code format of this interpreter; workers report theirs in their hello
BYTECODE_MAGIC = importlib.util.MAGIC_NUMBER.hex()


class CompiledCodeCache:
    """``source_hash → (filename, base64 marshal of the restricted code)``, thread-safe."""

    def __init__(self, max_entries: int = MAX_ENTRIES):
        self._max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[str, str]] = OrderedDict()
        #: compiles done by the parent (one per source, unless evicted)
        self.compiles = 0

    def get(self, source_hash: str, filename: str) -> str | None:
        """The marshalled code for a fresh worker, or None (send the source instead)."""
        with self._lock:
            entry = self._entries.get(source_hash)
            if entry is None or entry[0] != filename:
                return None
            self._entries.move_to_end(source_hash)
            return entry[1]

    def learn(self, source: str, source_hash: str, filename: str) -> None:
        """Compile ``source`` here once a worker ran it within its limits (see above)."""
        with self._lock:
            if source_hash in self._entries:
                return
        try:
            compiled = compile_script(source, filename)
        except Exception:  # not cacheable: the worker keeps compiling it
            return
        payload = base64.b64encode(marshal.dumps(compiled.code)).decode("ascii")
        with self._lock:
            self.compiles += 1
            self._entries[source_hash] = (filename, payload)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)

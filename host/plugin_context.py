"""What a built-in plugin is given to build itself: :class:`PluginContext`.

pytest hands a plugin its ``config``, datasette its ``datasette`` object; handing plugins the
whole ``Host`` would let them reach every service and call back into the flows that call
them. A plugin here receives this narrow, read-only context instead and takes from it, at
construction, the few things it uses:

* ``settings`` — the host's typed settings;
* ``db`` — the database (an audit plugin writes its own rows);
* ``module_storage`` — the modules' persistent storage (the sandbox bridge lends it);
* ``sandbox`` — the worker pool, as a function: the pool starts on first use, not when
  plugins are built;
* ``script_callbacks`` — the host callbacks (``crm.*``) lent to one call's script;
* ``metrics`` — the host's Prometheus counters (the metrics plugin counts calls in them).

Deliberately absent: the invoker, the flows and the plugin manager, so that serving a hook
can never re-enter the code that called it. Entry-point plugins are registered as loaded
(pluggy's habit) and get nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from host.calls import ModuleCall
from host.config import HostSettings
from host.db.engine import Database
from host.metrics.instruments import HostMetrics
from host.module_storage import ModuleStorageStore
from sandbox.invocation import HostCallback
from sandbox.pool import SandboxPool

ScriptCallbacks = Callable[[ModuleCall], dict[str, HostCallback]]


@dataclass(frozen=True)
class PluginContext:
    settings: HostSettings
    db: Database
    module_storage: ModuleStorageStore
    sandbox: Callable[[], SandboxPool]
    script_callbacks: ScriptCallbacks
    metrics: HostMetrics

"""A general restricted-execution engine: compile a script under a policy, run one of its
functions in an isolated worker with hard limits, and lend it the capabilities its caller
supplies. Knows nothing about CRM marketing; imports nothing from ``host`` or ``plugins``.

Isolation has two walls. RestrictedPython (:mod:`sandbox.compiler`, :mod:`sandbox.world`)
is the first. Below it, every worker process (:mod:`sandbox.worker`) hardens itself at start
(:mod:`sandbox.hardening`: minimal environment, empty network namespace, rlimits, uid
``nobody``) and, once warm, confines itself with the kernel (:mod:`sandbox.kernel_wall`):
Landlock read-only access to the interpreter's files and nothing else
(:mod:`sandbox.landlock`), and a seccomp-bpf filter against sockets, exec, fork, ptrace and
signals to other processes (:mod:`sandbox.seccomp_filter`). The layers in force
(``seccomp``, ``landlock``, ``netns``, ``uid``) are reported in each worker's hello.

Isolation design (why a module of one caller can never harm, read or slow another):

* **Capabilities belong to one invocation.** The parent gives every invocation a random
  token (:mod:`sandbox.conversation`); the worker binds every lent object to it
  (:class:`~sandbox.worker_capabilities.WorkerCapabilities`) and sends it on every frame.
  The parent refuses a frame with any other token (the worker is killed and replaced; a late
  frame of the previous call that overtakes a new one before it had any effect makes the
  pool run that call on another worker). When the invocation ends its capabilities are
  closed: using one raises ``CapabilityExpired`` inside the script and sends nothing.
* **Leftovers are collected in their own window.** What a script leaves behind (generators
  suspended in reference cycles, closures) is collected before its globals are cleared and
  again before its result goes back (:func:`sandbox.execution.collect_leftovers`), under
  its CPU/memory limits and with its own capabilities; the collector is disabled between
  invocations, so no script code runs there.
* **One trust domain per worker process.** Invocations carry an opaque ``isolation_key``
  (the host: ``(purpose, tenant, module, version)``); :class:`~sandbox.pool.SandboxPool`
  binds a worker to the first key it serves and never hands it another. Keys beyond the
  pool ``size`` evict the least recently used idle worker (killed, replaced by a fresh one).
* **Configuration that scripts cannot reach.** The worker's ``executor``/``executor_path``
  are constructor arguments of :class:`~sandbox.pool.SandboxPool` only (for tests of the
  engine); no setting, manifest field or environment variable sets them, and a worker is
  started with a fixed minimal environment.

Costs: each switch to a key that is not warm costs a worker start (today a fresh
interpreter via ``subprocess``, tens to hundreds of ms, hidden by one warm spare) plus the
script's compilation in that worker; the token costs one ``secrets.token_hex`` and a string
compare per frame; the in-window collection costs one or two ``gc.collect()`` passes per
invocation (see BENCHMARKS.md, "Tenant switch" and "Sandbox overhead"). The per-process
start-up of a worker is one function, :func:`sandbox.worker.start` (close inherited
descriptors, harden, serve); :mod:`sandbox.preload` holds the one preload list.
"""

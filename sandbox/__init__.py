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

* **Cheap fresh processes: a fork server.** Each pool starts one *template* process
  (:mod:`sandbox.template_process`) with ``subprocess`` — fork+exec from the threaded host,
  the minimal environment, so no host secret is in its memory. It is single-threaded,
  imports the engine and the whole import closure of the allow-listed modules
  (:mod:`sandbox.preload`), runs the engine's built-in warm-up script, unshares **one**
  network namespace for all its workers, ``gc.freeze()`` s, and then only forks: the child
  runs :func:`sandbox.worker.start` (closes every inherited descriptor but its two pipes,
  drops to ``nobody``, sets its rlimits, dies with the template) before any script runs.
  The pool receives the pipes and a pidfd over ``SCM_RIGHTS``
  (:mod:`sandbox.fork_server`), supervises the worker through the pidfd (it is not the
  parent; a pidfd never names a recycled pid) and asks the template, which reaps every
  child, for exit statuses. The template keeps root: a ``nobody`` worker can neither signal
  nor ptrace it, so an escaped worker cannot make it fork workers for others. A dead
  template is restarted on the next fork (its workers die with it); where fork-serving is
  impossible (not Linux, no pidfds) the pool spawns a fresh interpreter per worker and
  says so (``SandboxPool.start_method``, ``fork_server_unavailable``).
* **Compiled once per script, not per worker.** The first worker to run a source compiles it
  within the invocation's limits; after it ran, the pool compiles it itself and ships the
  byte code (``marshal``, host → worker only) to every fresh worker of other keys
  (:mod:`sandbox.code_cache` says why that direction is safe).

Costs (BENCHMARKS.md, "Tenant switch" and "Sandbox overhead"): a switch to a key that is
not warm costs a ``fork`` of the template plus the fresh worker's start-up and first call
(milliseconds; the fork of a replacement spare runs in the background), and no compilation
once the pool has seen the script; a version no worker has seen yet is compiled in the
worker and once more in the parent. Memory: the template (~33 MiB RSS, once per pool) plus,
per warm worker, the pages it wrote since the fork (6 to 7 MiB private of ~23 MiB RSS for the
SendGrid module; Pss counts the shared rest once). The pool ``size`` is the number of keys
kept warm (``CRM_HOST_SANDBOX_WORKERS``, default 2, LRU). All workers of a pool share one
network namespace (no interface but a down loopback), so what separates their network
state is that no worker can create a socket (RestrictedPython refuses the import; the
kernel wall, where it applies, refuses the syscall). The token costs one
``secrets.token_hex`` and a string compare per frame; the in-window collection costs one
or two ``gc.collect()`` passes per invocation. The per-process start-up of a worker is one
function, :func:`sandbox.worker.start` (close inherited descriptors, harden, serve);
:data:`sandbox.preload.PRELOAD` is the one preload list.
"""

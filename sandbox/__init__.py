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
(``seccomp``, ``landlock``, ``netns``, ``uid``) are reported in each worker's hello."""

"""A general restricted-execution engine: compile a script under a policy, run one of its
functions in an isolated worker with hard limits, and lend it the capabilities its caller
supplies. Knows nothing about CRM marketing; imports nothing from ``host`` or ``plugins``."""

"""The ``crm-host`` command line."""

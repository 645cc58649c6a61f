"""The integrator toolkit behind ``crm-host module new|validate|run|test|upload --url``:
scaffold, lint warnings, record/replay of fetch traffic, offline test cases."""

"""The `switchboard` command line."""

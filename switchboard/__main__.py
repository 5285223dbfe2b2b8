from switchboard.signals import exit_quietly_on_stop_signals, restore_default_stop_signals

# Before the imports below, which take a second or more: a Ctrl-C during them ends quietly.
exit_quietly_on_stop_signals()

from switchboard.cli import main  # noqa: E402

restore_default_stop_signals()
main()

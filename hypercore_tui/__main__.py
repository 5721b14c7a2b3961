from hypercore_tui.cli import entry

entry()

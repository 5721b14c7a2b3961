from hypercore_tui.start import entry

entry()

"""Other hosts, reached through OpenSSH (the user's own keys, agent, config and
known_hosts; no daemon of ours listens anywhere):

* :mod:`.registry`: the hosts in the user settings (``hosts add|list|remove``);
* :mod:`.connection`: one host's shared SSH connection and the version check made once
  per connection;
* :mod:`.remote`: Hypercore commands run there (``--host NAME COMMAND ...``);
* :mod:`.stream`: a host's ``watch --json`` stream followed, stalls said within 5 s.

The wire format of the stream is ``core/watchwire.py``; its writer ``services/watch.py``.
"""

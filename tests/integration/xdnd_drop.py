"""Drop files on an X window as a file manager does (an XDND source, protocol version 5):
``python3 xdnd_drop.py DISPLAY WINDOW_ID FILE...``. Exit 0 once the target says it finished
and accepted the drop, 1 when it refused it, 2 when nothing happened within 20 s.

The drop lands at the window's centre; the files are offered as ``text/uri-list``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from urllib.parse import quote

from Xlib import X, display
from Xlib.protocol import event

TIMEOUT = 20.0


def main(argv: list[str]) -> int:
    conn = display.Display(argv[1])
    target = conn.create_resource_object("window", int(argv[2], 0))
    uris = "".join(f"file://{quote(str(Path(f).resolve()))}\r\n" for f in argv[3:]).encode()

    def atom(name: str) -> int:
        return int(conn.intern_atom(name))

    aware, selection = atom("XdndAware"), atom("XdndSelection")
    uri_list, targets, copy = atom("text/uri-list"), atom("TARGETS"), atom("XdndActionCopy")
    root = conn.screen().root
    source = root.create_window(0, 0, 1, 1, 0, X.CopyFromParent)
    prop = target.get_full_property(aware, X.AnyPropertyType)
    if prop is None:
        print("the window is not XdndAware", file=sys.stderr)
        return 1
    version = min(5, int(prop.value[0]))
    source.set_selection_owner(selection, X.CurrentTime)

    def send(name: str, data: list[int]) -> None:
        message = event.ClientMessage(window=target, client_type=atom(name),
                                      data=(32, (data + [0] * 5)[:5]))
        target.send_event(message, event_mask=0)
        conn.flush()

    geometry = target.get_geometry()
    centre = root.translate_coords(target, geometry.width // 2, geometry.height // 2)
    x, y = centre.x, centre.y  # (the root's coordinates, as XdndPosition wants them)
    send("XdndEnter", [source.id, version << 24, uri_list])
    send("XdndPosition", [source.id, 0, (x << 16) | y, X.CurrentTime, copy])
    dropped = False
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if not conn.pending_events():
            time.sleep(0.02)
            continue
        ev = conn.next_event()
        if ev.type == X.ClientMessage and ev.client_type == atom("XdndStatus"):
            if not ev.data[1][1] & 1:
                send("XdndPosition", [source.id, 0, (x << 16) | y, X.CurrentTime, copy])
                continue
            if not dropped:
                send("XdndDrop", [source.id, 0, X.CurrentTime])
                dropped = True
        elif ev.type == X.ClientMessage and ev.client_type == atom("XdndFinished"):
            accepted = version < 5 or bool(ev.data[1][1] & 1)
            return 0 if accepted else 1
        elif ev.type == X.SelectionRequest:
            requestor, reply_property = ev.requestor, ev.property or ev.target
            if ev.target == uri_list:
                requestor.change_property(reply_property, uri_list, 8, uris)
            elif ev.target == targets:
                requestor.change_property(reply_property, atom("ATOM"), 32, [uri_list])
            else:
                reply_property = X.NONE
            notify = event.SelectionNotify(time=ev.time, requestor=requestor,
                                           selection=ev.selection, target=ev.target,
                                           property=reply_property)
            requestor.send_event(notify, event_mask=0)
            conn.flush()
    print("no XdndFinished within 20 s", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))

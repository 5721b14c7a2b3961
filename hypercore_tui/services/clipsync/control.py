"""The running sync's control socket: ``clipsync.sock`` in the private runtime directory.

One JSON object a line each way. Requests (``op``):

* ``status`` → the engine's status (``clip status --json`` prints it);
* ``history`` → ``{"entries": [meta...]}``, newest first (no contents);
* ``offer`` with ``text`` and ``source`` → the entry made current (a paste in a dashboard
  started after the sync);
* ``again`` with ``id`` → an entry of the history made current again;
* ``push`` with ``id`` and ``vm`` → that entry written into that VM now (not made current);
* ``files`` with ``entry`` and ``names`` (base64) → a files entry another process of this
  user made in the share (:func:`offer_files`: ``clip push --files``, a dashboard that
  follows this sync) checked and made current;
* ``text`` with ``id`` → ``{"text": ...}``, a text entry's content (``null`` when it is
  not in the history or not text): a dashboard's opt-in OSC 52 copy;
* ``events`` → the status, then one event object a line until the client goes away;
* ``get`` with ``id`` (``null``: the current entry) → ``{"item": {"id", "kind", "data"
  (base64), "source", "at"}}`` or ``{"item": null}``: an entry's content (``clip link``
  attached to this sync sends it to another host);
* ``entry`` with ``kind`` (``text`` or ``image/png``), ``data`` (base64), ``source`` and
  ``at`` → ``{"item": meta}`` or ``{"item": null}`` (no change: the same content, or
  detected before the current entry): an entry from another host (``clip link``), checked
  as a guest's (text: UTF-8 without NUL, at most 8 MiB; PNG: at most 12 MiB). ``files``
  takes an ``at`` too.

Only this user reaches the socket (the runtime directory is 0700). Requests are data:
nothing in them names a path or a command (a files entry is named by its 16 hex digits, in
the share's entries folder; the sync checks it as one a guest made).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import math
import os
from collections.abc import AsyncGenerator, Sequence
from typing import TYPE_CHECKING, Any

from hypercore_tui.core.clip import KIND_TEXT
from hypercore_tui.core.errors import HypercoreError, InvalidInput, OperationFailed
from hypercore_tui.services import clipfiles, clipfiles_host
from hypercore_tui.services.clipimage import KIND_PNG, MAX_IMAGE_BYTES
from hypercore_tui.services.clipsync.engine import (
    HOST_SOURCE,
    SyncEvent,
    control_path,
    holder,
)
from hypercore_tui.services.context import Context

if TYPE_CHECKING:
    from hypercore_tui.services.clipsync.engine import SyncEngine

log = logging.getLogger("hypercore.clipsync")
log.addHandler(logging.NullHandler())

#: A request line is at most this long (a text offer included).
MAX_REQUEST = 12 * 1024 * 1024
TIMEOUT = 5.0
#: A push waits for the guest (its agent, a clipboard tool started in the session).
PUSH_TIMEOUT = 60.0
#: The sync checks a files entry (lstat of each item: up to 200,000 of them).
FILES_TIMEOUT = 120.0
NO_SYNC = ("no clipboard sync is running: start one (hypercore clip sync, or C in the "
           "dashboard)")


async def serve(engine: SyncEngine) -> asyncio.AbstractServer:
    path = control_path(engine.ctx)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a dead sync's socket: the lock says nobody serves it

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await _client(engine, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    server = await asyncio.start_unix_server(client, path=str(path), limit=MAX_REQUEST)
    path.chmod(0o600)
    return server


async def _client(engine: SyncEngine, reader: asyncio.StreamReader,
                  writer: asyncio.StreamWriter) -> None:
    while True:
        line = await reader.readline()
        if not line:
            return
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise InvalidInput("a request is a JSON object")
            op = request.get("op")
            if op == "events":
                with contextlib.suppress(ConnectionError):
                    await _stream(engine, writer)
                return
            if op == "push":
                reply = await _push(engine, request)
            elif op == "files":
                reply = await _files(engine, request)
            else:
                reply = _answer(engine, op, request)
        except (json.JSONDecodeError, UnicodeDecodeError):
            reply = {"error": "not JSON"}
        except HypercoreError as exc:
            reply = {"error": str(exc)}
        except Exception as exc:  # a bug answers with one line too, and the sync goes on
            log.exception("clipsync control request failed")
            reply = {"error": f"internal error: {type(exc).__name__}: {exc}"}
        writer.write(json.dumps(reply).encode() + b"\n")
        await writer.drain()


def _answer(engine: SyncEngine, op: object, request: dict[str, Any]) -> dict[str, Any]:
    if op == "status":
        return engine.status()
    if op == "history":
        return {"entries": [item.meta() for item in engine.history]}
    if op == "offer":
        text, source = request.get("text"), request.get("source", "dashboard")
        if not isinstance(text, str) or not isinstance(source, str):
            raise InvalidInput("offer needs text and source strings")
        item = engine.offer_text(text, source[:40])
        return {"item": item.meta() if item else None}
    if op == "text":
        item_id = request.get("id")
        if not isinstance(item_id, int):
            raise InvalidInput("text needs an entry id")
        item = engine.history.get(item_id)
        return {"text": item.text if item is not None and item.kind == KIND_TEXT else None}
    if op == "get":
        item_id = request.get("id")
        if item_id is not None and not isinstance(item_id, int):
            raise InvalidInput("get needs an entry id or null")
        item = engine.history.current if item_id is None else engine.history.get(item_id)
        if item is None:
            return {"item": None}
        return {"item": {"id": item.id, "kind": item.kind, "source": item.source,
                         "at": item.at, "data": base64.b64encode(item.data).decode("ascii")}}
    if op == "entry":
        return {"item": _entry(engine, request)}
    if op == "again":
        item_id = request.get("id")
        if not isinstance(item_id, int):
            raise InvalidInput("again needs an entry id")
        return {"item": engine.again(item_id, "history").meta()}
    raise InvalidInput(f"unknown request {str(op)[:40]!r}")


def _entry(engine: SyncEngine, request: dict[str, Any]) -> dict[str, Any] | None:
    kind, data, source, at = (request.get(k) for k in ("kind", "data", "source", "at"))
    if not (kind in (KIND_TEXT, KIND_PNG) and isinstance(data, str)
            and isinstance(source, str) and _is_time(at)):
        raise InvalidInput("entry needs a kind (text or image/png), base64 data, a source "
                           "and a time")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("entry: data that is not base64") from None
    if kind == KIND_PNG and len(raw) > MAX_IMAGE_BYTES:
        raise InvalidInput(f"an image above {MAX_IMAGE_BYTES // (1 << 20)} MiB")
    if kind == KIND_TEXT:
        try:
            raw.decode("utf-8", errors="strict")
        except UnicodeDecodeError:
            raise InvalidInput("entry: a text that is not UTF-8") from None
    item = engine.offer(str(kind), raw, source[:40], at=float(at))  # type: ignore[arg-type]
    return item.meta() if item else None


def _is_time(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value) and value >= 0


async def _push(engine: SyncEngine, request: dict[str, Any]) -> dict[str, Any]:
    item_id, vm = request.get("id"), request.get("vm")
    if not isinstance(item_id, int) or not isinstance(vm, str):
        raise InvalidInput("push needs an entry id and a VM name")
    return {"item": (await engine.push_to(item_id, vm)).meta(), "vm": vm}


async def _files(engine: SyncEngine, request: dict[str, Any]) -> dict[str, Any]:
    entry, names = request.get("entry"), request.get("names")
    source, at = request.get("source", HOST_SOURCE), request.get("at")
    if not (isinstance(entry, str) and isinstance(names, list) and isinstance(source, str)
            and all(isinstance(n, str) for n in names) and (at is None or _is_time(at))):
        raise InvalidInput("files needs an entry, a list of base64 names and a source")
    try:
        decoded = [base64.b64decode(n, validate=True) for n in names]
    except (binascii.Error, ValueError):
        raise InvalidInput("files: a name that is not base64") from None
    when = float(at) if at is not None else None
    return {"item": (await engine.offer_files(entry, decoded, source[:40], at=when)).meta()}


async def _stream(engine: SyncEngine, writer: asyncio.StreamWriter) -> None:
    queue: asyncio.Queue[SyncEvent] = asyncio.Queue(maxsize=1000)

    def put(event: SyncEvent) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            queue.put_nowait(event)

    stop = engine.listen(put)
    try:
        writer.write(json.dumps({"status": engine.status()}).encode() + b"\n")
        await writer.drain()
        stopped = asyncio.ensure_future(engine.stopped.wait())
        try:
            while True:
                getting = asyncio.ensure_future(queue.get())
                await asyncio.wait([getting, stopped], return_when=asyncio.FIRST_COMPLETED)
                if not getting.done():  # the sync stops: its followers learn it (EOF)
                    getting.cancel()
                    return
                event = getting.result()
                writer.write(json.dumps({"event": event.to_json()}).encode() + b"\n")
                await writer.drain()
        finally:
            stopped.cancel()
    finally:
        stop()


# -- the client side (clip status, a dashboard, tests) --------------------------------------


async def request(ctx: Context, op: str, *, timeout: float = TIMEOUT, **args: Any
                  ) -> dict[str, Any] | None:
    """Ask the running sync; None when none runs. ``timeout``: for the answer (a push
    waits for the guest)."""
    if holder(ctx) is None:
        return None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(str(control_path(ctx)), limit=MAX_REQUEST), TIMEOUT)
    except (OSError, TimeoutError):
        return None  # starting up or going away
    try:
        writer.write(json.dumps({"op": op, **args}).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
    except (OSError, TimeoutError, asyncio.LimitOverrunError, ValueError) as exc:
        raise OperationFailed(f"the clipboard sync did not answer: {exc or 'timeout'}"
                              ) from None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    try:
        reply = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise OperationFailed("the clipboard sync answered something that is not JSON"
                              ) from None
    if not isinstance(reply, dict):
        raise OperationFailed("the clipboard sync answered something that is not an object")
    if "error" in reply:
        raise OperationFailed(f"clipboard sync: {reply['error']}")
    return reply


async def offer_files(ctx: Context, paths: Sequence[str | bytes | os.PathLike[str]]
                      ) -> dict[str, Any]:
    """Host files and folders offered on every VM's clipboard by the running sync (of
    another process): copied into a new entry in the share
    (:func:`clipfiles_host.build_entry`), then handed to the sync, which checks it and
    makes it current. The entry's meta. One line (:class:`OperationFailed`) when no sync
    runs, said before anything is copied; the entry is removed when the sync does not
    take it."""
    if holder(ctx) is None:
        raise OperationFailed(NO_SYNC)
    files = await clipfiles_host.build_entry_async(ctx, paths)
    try:
        reply = await request(ctx, "files", timeout=FILES_TIMEOUT, entry=files.entry,
                              names=[base64.b64encode(n).decode("ascii") for n in files.names],
                              source=HOST_SOURCE)
        if reply is None:
            raise OperationFailed(f"{NO_SYNC}; the files were not offered")
        item = reply.get("item")
        if not isinstance(item, dict):
            raise OperationFailed("the clipboard sync answered without the entry")
    except BaseException:
        clipfiles.forget(ctx, files.entry)  # (the sync removed it too if it refused it)
        raise
    return item


async def status(ctx: Context) -> dict[str, Any]:
    """The running sync's status, or ``{"running": false}``."""
    reply = await request(ctx, "status")
    return reply if reply is not None else {"running": False}


async def events(ctx: Context) -> AsyncGenerator[dict[str, Any], None]:
    """The running sync's status and then its events, as they come (ends when it stops)."""
    reader, writer = await asyncio.open_unix_connection(str(control_path(ctx)),
                                                        limit=MAX_REQUEST)
    try:
        writer.write(b'{"op": "events"}\n')
        await writer.drain()
        while True:
            line = await reader.readline()
            if not line:
                return
            with contextlib.suppress(json.JSONDecodeError, UnicodeDecodeError):
                obj = json.loads(line)
                if isinstance(obj, dict):
                    yield obj
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

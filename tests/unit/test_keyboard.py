"""Characters and key names as QEMU key codes (core.keyboard): the layout tables checked
against QEMU's own keymaps, round trips through an independent decoder, refusals."""

from __future__ import annotations

import re
import string
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hypercore_tui.core import keyboard
from hypercore_tui.core.errors import InvalidInput
from hypercore_tui.core.keyboard import Chord, Dead, key_chords, layout, text_chords, untypeable

PRINTABLE_ASCII = "".join(chr(c) for c in range(0x20, 0x7F))

# -- the tables against QEMU's keymaps (generated from xkb by qemu-keymap) ----------------

QEMU_KEYMAPS = Path("/usr/share/qemu/keymaps")
#: QEMU's keymap file of each layout (de and fr are xkb's "nodeadkeys" variants there:
#: where ours has a dead key, QEMU's has the accent itself).
QEMU_FILES = {"us": "en-us", "gb": "en-gb", "de": "de", "fr": "fr"}
KEYSYMS = {
    "exclam": "!", "quotedbl": '"', "numbersign": "#", "dollar": "$", "percent": "%",
    "ampersand": "&", "apostrophe": "'", "parenleft": "(", "parenright": ")",
    "asterisk": "*", "plus": "+", "comma": ",", "minus": "-", "period": ".", "slash": "/",
    "colon": ":", "semicolon": ";", "less": "<", "equal": "=", "greater": ">",
    "question": "?", "at": "@", "bracketleft": "[", "backslash": "\\", "bracketright": "]",
    "asciicircum": "^", "underscore": "_", "grave": "`", "braceleft": "{", "bar": "|",
    "braceright": "}", "asciitilde": "~", "sterling": "£", "section": "§", "degree": "°",
    "twosuperior": "²", "threesuperior": "³", "mu": "µ", "EuroSign": "€", "currency": "¤",
    "notsign": "¬", "ssharp": "ß", "adiaeresis": "ä", "odiaeresis": "ö", "udiaeresis": "ü",
    "Adiaeresis": "Ä", "Odiaeresis": "Ö", "Udiaeresis": "Ü", "eacute": "é", "egrave": "è",
    "ccedilla": "ç", "agrave": "à", "ugrave": "ù", "acute": "´", "diaeresis": "¨",
}
MODS = {(): "", ("shift",): "shift", ("alt_r",): "altgr", ("shift", "alt_r"): "shift altgr"}


def qemu_keymap(name: str) -> dict[tuple[str, str], str]:
    """(qcode, modifiers) → the keysym name QEMU's keymap file ``name`` gives."""
    path = QEMU_KEYMAPS / QEMU_FILES[name]
    assert path.is_file(), f"QEMU's keymap {path} is missing (qemu-system-data)"
    qcodes: dict[int, str] = {}
    out: dict[tuple[str, str], str] = {}
    for line in path.read_text().splitlines():
        found = re.match(r'# evdev \d+ \(0x[0-9a-f]+\), QKeyCode "([^"]+)", number (0x[0-9a-f]+)',
                         line)
        if found:
            qcodes[int(found.group(2), 16)] = found.group(1)
            continue
        if not line or line.startswith(("#", "map ", "include ")):
            continue
        keysym, number, *mods = line.split()
        if int(number, 16) in qcodes:
            out.setdefault((qcodes[int(number, 16)], " ".join(mods)), keysym)
    return out


@pytest.mark.parametrize("name", ["us", "gb", "de", "fr"])
def test_every_key_agrees_with_qemus_keymap(name: str) -> None:
    qemu = qemu_keymap(name)
    checked = 0
    for qcode, symbols in layout(name).keys.items():
        for level, symbol in enumerate(symbols):
            if not symbol:
                continue
            keysym = qemu.get((qcode, MODS[keyboard.LEVELS[level]]))
            assert keysym is not None, f"{name}: QEMU has nothing on {qcode} level {level}"
            want = KEYSYMS.get(keysym, keysym)
            got = symbol.accent if isinstance(symbol, Dead) else symbol
            assert got == want, f"{name}: {qcode} level {level} is {got!r}, QEMU says {keysym}"
            checked += 1
    assert checked >= 90


@pytest.mark.parametrize("name", ["us", "gb", "de", "fr"])
def test_no_character_is_on_two_keys(name: str) -> None:
    seen: dict[object, str] = {}
    for qcode, symbols in layout(name).keys.items():
        for symbol in symbols:
            if symbol:
                assert symbol not in seen, f"{symbol!r} on {seen[symbol]} and {qcode}"
                seen[symbol] = qcode


# -- typing text -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["us", "gb", "de", "fr"])
def test_every_printable_ascii_character_is_typeable(name: str) -> None:
    assert untypeable(PRINTABLE_ASCII + "\n\t\r", layout(name)) == []


def test_us_chords_for_every_printable_ascii_character() -> None:
    us = layout("us")
    shifted = '~!@#$%^&*()_+{}|:"<>?' + string.ascii_uppercase
    for char in PRINTABLE_ASCII:
        (chord,) = text_chords(char, us)
        if char == " ":
            assert chord == Chord(("spc",))
        elif char in shifted:
            assert chord.keys[0] == "shift" and len(chord.keys) == 2, char
        else:
            assert len(chord.keys) == 1, char
    assert text_chords("aZ9?", us) == [Chord(("a",)), Chord(("shift", "z")), Chord(("9",)),
                                       Chord(("shift", "slash"))]


def test_line_breaks_and_tabs_are_keys() -> None:
    us = layout("us")
    enter, tab = Chord(("ret",)), Chord(("tab",))
    assert text_chords("a\r\nb\rc\nd\te", us) == [
        Chord(("a",)), enter, Chord(("b",)), enter, Chord(("c",)), enter, Chord(("d",)), tab,
        Chord(("e",))]


def test_german_letters_dead_keys_and_altgr() -> None:
    de = layout("de")
    assert text_chords("zyß", de) == [Chord(("y",)), Chord(("z",)), Chord(("minus",))]
    assert text_chords("Ä@€~", de) == [Chord(("shift", "apostrophe")), Chord(("alt_r", "q")),
                                       Chord(("alt_r", "e")), Chord(("alt_r", "bracket_right"))]
    # ^ and ` are dead keys: then Space; é is the dead acute then e
    assert text_chords("^`é", de) == [
        Chord(("grave_accent",)), Chord(("spc",)), Chord(("shift", "equal")), Chord(("spc",)),
        Chord(("equal",)), Chord(("e",))]
    assert text_chords("Ô", de) == [Chord(("grave_accent",)), Chord(("shift", "o"))]


def test_french_azerty_and_dead_circumflex() -> None:
    fr = layout("fr")
    assert text_chords("aqzwm", fr) == [Chord(("q",)), Chord(("a",)), Chord(("w",)),
                                        Chord(("z",)), Chord(("semicolon",))]
    assert text_chords("1é", fr) == [Chord(("shift", "1")), Chord(("2",))]
    assert text_chords("ê^ï", fr) == [
        Chord(("bracket_left",)), Chord(("e",)), Chord(("alt_r", "9")),
        Chord(("shift", "bracket_left")), Chord(("i",))]


def test_refusal_lists_each_character_once_escaped() -> None:
    us = layout("us")
    assert untypeable("héllo wörld é\x07", us) == ["é", "ö", "\x07"]
    with pytest.raises(InvalidInput) as caught:
        text_chords("héllo\x1b[31m wörld", us)
    message = str(caught.value)
    assert "\x1b" not in message and "\\x1b" in message
    assert message.startswith("the us keymap cannot type 3 characters of this text: é \\x1b ö")
    assert "\n" not in message


def test_refusal_names_the_layouts_that_can() -> None:
    with pytest.raises(InvalidInput, match=r"cannot type 1 character of this text: ä "
                                           r"\(--keymap de or fr can\)"):
        text_chords("bär", layout("us"))
    with pytest.raises(InvalidInput, match="£ ñ$"):
        text_chords("£ and ñ", layout("de"))  # no layout types ñ: no suggestion


def test_accents_alone_that_differ_between_systems_are_refused() -> None:
    assert untypeable("´", layout("de")) == ["´"]
    assert untypeable("¨", layout("fr")) == ["¨"]


def test_a_long_refusal_is_bounded() -> None:
    text = "".join(chr(c) for c in range(0x400, 0x500))  # Cyrillic
    message = keyboard.refusal(untypeable(text, layout("us")), layout("us"))
    assert message.endswith(f"and {256 - keyboard.REFUSAL_SHOWN} more")
    assert len(message) < 200


def test_layout_names_and_aliases() -> None:
    assert layout("UK").name == "gb" and layout(" de ").name == "de"
    with pytest.raises(InvalidInput, match="unknown keymap 'dvorak': use us, de, fr, gb"):
        layout("dvorak")


# -- an independent decoder: what a guest with that layout makes of the keys ---------------

def decode(chords: list[Chord], name: str) -> str:
    """The text a guest with layout ``name`` gets from ``chords`` (dead keys composed the
    way the Linux console and X11 do: then Space gives the accent, then a letter the
    accented letter)."""
    by_key: dict[tuple[tuple[str, ...], str], object] = {}
    for qcode, symbols in layout(name).keys.items():
        for level, symbol in enumerate(symbols):
            by_key[(keyboard.LEVELS[level], qcode)] = symbol
    out: list[str] = []
    pending: str | None = None
    combining = {"^": "\u0302", "`": "\u0300", "´": "\u0301", "¨": "\u0308"}
    for chord in chords:
        key = (chord.keys[:-1], chord.keys[-1])
        symbol = {"spc": " ", "ret": "\n", "tab": "\t"}.get(chord.keys[-1]) \
            if not chord.keys[:-1] else None
        symbol = symbol if symbol is not None else by_key[key]
        if isinstance(symbol, Dead):
            assert pending is None
            pending = symbol.accent
            continue
        assert isinstance(symbol, str) and symbol
        if pending is not None:
            symbol = pending if symbol == " " else unicodedata.normalize(
                "NFC", symbol + combining[pending])
            assert len(symbol) == 1
            pending = None
        out.append(symbol)
    assert pending is None
    return "".join(out)


@pytest.mark.parametrize("name", ["us", "gb", "de", "fr"])
def test_every_typeable_character_round_trips(name: str) -> None:
    lay = layout(name)
    chars = [c for c in keyboard._strokes(name) if c != "\r"]
    text = "".join(chars)
    assert decode(text_chords(text, lay), name) == text


@given(st.sampled_from(["us", "gb", "de", "fr"]), st.data())
def test_random_texts_round_trip(name: str, data: st.DataObject) -> None:
    chars = sorted(keyboard._strokes(name))
    text = data.draw(st.text(alphabet=st.sampled_from(chars), max_size=80))
    assert decode(text_chords(text, layout(name)), name) == text


# -- key names (keyboard mode) -----------------------------------------------------------

@pytest.mark.parametrize(("spec", "keys"), [
    ("enter", ("ret",)), ("tab", ("tab",)), ("shift+tab", ("shift", "tab")),
    ("backspace", ("backspace",)), ("escape", ("esc",)), ("space", ("spc",)),
    ("up", ("up",)), ("ctrl+left", ("ctrl", "left")), ("shift+down", ("shift", "down")),
    ("alt+right", ("alt", "right")), ("home", ("home",)), ("end", ("end",)),
    ("pageup", ("pgup",)), ("pagedown", ("pgdn",)), ("insert", ("insert",)),
    ("delete", ("delete",)), ("ctrl+alt+delete", ("ctrl", "alt", "delete")),
    ("f1", ("f1",)), ("f12", ("f12",)), ("alt+f4", ("alt", "f4")),
    ("ctrl+alt+f2", ("ctrl", "alt", "f2")), ("f13", ("shift", "f1")),
    ("f24", ("shift", "f12")), ("ctrl+c", ("ctrl", "c")), ("ctrl+d", ("ctrl", "d")),
    ("alt+x", ("alt", "x")), ("alt+shift+a", ("alt", "shift", "a")), ("A", ("shift", "a")),
    ("ctrl+]", ("ctrl", "bracket_right")), ("+", ("shift", "equal")),
    ("ctrl++", ("ctrl", "shift", "equal")), ("ctrl+shift+up", ("ctrl", "shift", "up")),
])
def test_key_names_on_us(spec: str, keys: tuple[str, ...]) -> None:
    assert key_chords(spec, layout("us")) == (Chord(keys),)


def test_key_names_go_through_the_layout() -> None:
    de = layout("de")
    assert key_chords("ctrl+z", de) == (Chord(("ctrl", "y")),)
    assert key_chords("@", de) == (Chord(("alt_r", "q")),)
    assert key_chords("ctrl+@", de) == (Chord(("ctrl", "alt_r", "q")),)
    assert key_chords("é", de) == (Chord(("equal",)), Chord(("e",)))
    assert key_chords("q", layout("fr")) == (Chord(("a",)),)


@pytest.mark.parametrize("spec", ["hyper+a", "f25", "nosuchkey", "ctrl+shift", "ctrl+é", "ñ"])
def test_unknown_keys_are_refused(spec: str) -> None:
    with pytest.raises(InvalidInput):
        key_chords(spec, layout("de"))


def test_chord_events_and_queue_bytes() -> None:
    chord = Chord(("shift", "alt_r", "q"))
    assert chord.events() == [("shift", True), ("alt_r", True), ("q", True), ("q", False),
                              ("alt_r", False), ("shift", False)]
    assert Chord(("a",)).ps2_bytes == 2
    assert Chord(("shift", "a")).ps2_bytes == 4
    assert Chord(("up",)).ps2_bytes == 4
    assert chord.ps2_bytes == 8

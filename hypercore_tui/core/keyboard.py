"""What keys to press, as QEMU key codes (qcodes): text typed on a keyboard layout, and
key names (``ctrl+alt+f2``, ``shift+up``, ``é``) for the dashboard's keyboard mode.

QMP ``input-send-event`` sends scancodes: the guest's layout decides which character a
key gives, so typing text means knowing that layout. The layouts here are the default
variants of X11's (xkb) ``us``, ``de``, ``fr`` and ``gb``, which Debian's console-setup
also puts on the text console. Their dead keys are typed as such: on ``de`` a ``^`` is
the dead circumflex then Space and an ``é`` the dead acute then ``e``; on ``fr`` an
``ê`` is the dead circumflex then ``e``. The acute accent and the diaeresis alone are
refused: the Linux console makes ``'`` and ``"`` of a dead key then Space, X11 ``´`` and
``¨``, so no key sequence gives the same character everywhere.

Line breaks (LF, CRLF, CR) are typed as Enter and a tab as Tab; no other control
character has a key. :func:`untypeable` lists what a layout cannot type, so that a text
is refused up front, never typed in part.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hypercore_tui.core.errors import InvalidInput
from hypercore_tui.core.text import printable

DEFAULT_LAYOUT = "us"

#: At most this many untypeable characters are named in a refusal.
REFUSAL_SHOWN = 24


@dataclass(frozen=True)
class Chord:
    """Keys held together (qcodes): the modifiers first, the key last; pressed in this
    order and released in reverse."""

    keys: tuple[str, ...]

    def events(self) -> list[tuple[str, bool]]:
        """(qcode, down) in the order they are sent."""
        return [(k, True) for k in self.keys] + [(k, False) for k in reversed(self.keys)]

    @property
    def ps2_bytes(self) -> int:
        """Bytes this chord puts in the PS/2 keyboard's queue (QEMU's holds 16): one per
        press and one per release, two each for the keys with an ``E0`` prefix."""
        return sum(2 * (2 if key in EXTENDED_KEYS else 1) for key in self.keys)


@dataclass(frozen=True)
class Dead:
    """A dead key: it gives nothing itself and changes the next key (``accent`` is the
    spacing character it stands for: ``^``, ```` ` ````, ``´``, ``¨``)."""

    accent: str


Symbol = str | Dead

#: Keys whose scancodes carry the ``E0`` prefix (two bytes a press or release).
EXTENDED_KEYS = frozenset({
    "alt_r", "ctrl_r", "meta_l", "meta_r", "menu", "up", "down", "left", "right", "home",
    "end", "pgup", "pgdn", "insert", "delete", "kp_divide", "kp_enter", "print",
})

SHIFT, ALTGR = "shift", "alt_r"
#: The modifiers of each level of a key: plain, shift, AltGr, shift+AltGr.
LEVELS: tuple[tuple[str, ...], ...] = ((), (SHIFT,), (ALTGR,), (SHIFT, ALTGR))

#: A dead key then Space gives its accent alone, the same everywhere only for these.
SPACING_ACCENTS = frozenset("^`~")

_COMBINING = {"^": "\u0302", "`": "\u0300", "´": "\u0301", "¨": "\u0308", "~": "\u0303"}


def _composed(accent: str) -> dict[str, str]:
    """Base letter → the Latin-1 letter a dead ``accent`` then that letter gives (the
    Linux console's default accent table and X11 agree on these)."""
    out: dict[str, str] = {}
    for base in "aeiouyAEIOUYn":
        result = unicodedata.normalize("NFC", base + _COMBINING[accent])
        if len(result) == 1 and ord(result) < 0x100:
            out[base] = result
    return out


def _qwerty_letters() -> dict[str, tuple[Symbol, ...]]:
    return {c: (c, c.upper()) for c in "abcdefghijklmnopqrstuvwxyz"}


@dataclass(frozen=True)
class Layout:
    """A keyboard layout: per key (its qcode, named by the US key in that place) the
    symbols of its levels (plain, shift, AltGr, shift+AltGr; ``""``: none)."""

    name: str
    title: str
    keys: Mapping[str, tuple[Symbol, ...]]

    def chords(self, char: str) -> tuple[Chord, ...] | None:
        """The chords that type ``char`` (two for a dead key and the key after it), or
        None when this layout cannot type it."""
        return _strokes(self.name).get(char)

    def can_type(self, char: str) -> bool:
        return char in _strokes(self.name)


_US = Layout("us", "English (US)", {
    **_qwerty_letters(),
    "grave_accent": ("`", "~"), "1": ("1", "!"), "2": ("2", "@"), "3": ("3", "#"),
    "4": ("4", "$"), "5": ("5", "%"), "6": ("6", "^"), "7": ("7", "&"), "8": ("8", "*"),
    "9": ("9", "("), "0": ("0", ")"), "minus": ("-", "_"), "equal": ("=", "+"),
    "bracket_left": ("[", "{"), "bracket_right": ("]", "}"), "backslash": ("\\", "|"),
    "semicolon": (";", ":"), "apostrophe": ("'", '"'), "comma": (",", "<"),
    "dot": (".", ">"), "slash": ("/", "?"),
})

_GB = Layout("gb", "English (UK)", {
    **_US.keys,
    "grave_accent": ("`", "¬"), "2": ("2", '"'), "3": ("3", "£"), "4": ("4", "$", "€"),
    "apostrophe": ("'", "@"), "backslash": ("#", "~"), "less": ("\\", "|"),
})

_DE = Layout("de", "German", {
    **_qwerty_letters(),
    "grave_accent": (Dead("^"), "°"), "1": ("1", "!"), "2": ("2", '"', "²"),
    "3": ("3", "§", "³"), "4": ("4", "$"), "5": ("5", "%"), "6": ("6", "&"),
    "7": ("7", "/", "{"), "8": ("8", "(", "["), "9": ("9", ")", "]"), "0": ("0", "=", "}"),
    "minus": ("ß", "?", "\\"), "equal": (Dead("´"), Dead("`")),
    "q": ("q", "Q", "@"), "e": ("e", "E", "€"), "y": ("z", "Z"), "z": ("y", "Y"),
    "bracket_left": ("ü", "Ü"), "bracket_right": ("+", "*", "~"),
    "semicolon": ("ö", "Ö"), "apostrophe": ("ä", "Ä"), "backslash": ("#", "'"),
    "less": ("<", ">", "|"), "m": ("m", "M", "µ"), "comma": (",", ";"),
    "dot": (".", ":"), "slash": ("-", "_"),
})

_FR = Layout("fr", "French (AZERTY)", {
    **_qwerty_letters(),
    "grave_accent": ("²",), "1": ("&", "1"), "2": ("é", "2", "~"), "3": ('"', "3", "#"),
    "4": ("'", "4", "{"), "5": ("(", "5", "["), "6": ("-", "6", "|"),
    "7": ("è", "7", "`"), "8": ("_", "8", "\\"), "9": ("ç", "9", "^"),
    "0": ("à", "0", "@"), "minus": (")", "°", "]"), "equal": ("=", "+", "}"),
    "q": ("a", "A"), "w": ("z", "Z"), "e": ("e", "E", "€"), "a": ("q", "Q"),
    "bracket_left": (Dead("^"), Dead("¨")), "bracket_right": ("$", "£", "¤"),
    "semicolon": ("m", "M"), "apostrophe": ("ù", "%"), "backslash": ("*", "µ"),
    "z": ("w", "W"), "m": (",", "?"), "comma": (";", "."), "dot": (":", "/"),
    "slash": ("!", "§"), "less": ("<", ">"),
})

LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (_US, _DE, _FR, _GB)}
#: Other names people use for a layout.
ALIASES = {"uk": "gb", "en-us": "us", "en-gb": "gb"}


def layout(name: str) -> Layout:
    """The layout called ``name`` (or an alias of it), or :class:`InvalidInput`."""
    key = name.strip().lower()
    found = LAYOUTS.get(ALIASES.get(key, key))
    if found is None:
        raise InvalidInput(f"unknown keymap {printable(name, limit=40)!r}: use "
                           f"{', '.join(LAYOUTS)}")
    return found


def layout_names() -> tuple[str, ...]:
    return tuple(LAYOUTS)


SPACE = Chord(("spc",))
ENTER = Chord(("ret",))
TAB = Chord(("tab",))


@functools.cache
def _strokes(name: str) -> dict[str, tuple[Chord, ...]]:
    """Every character layout ``name`` types → its chords."""
    keys = LAYOUTS[name].keys
    direct: dict[str, Chord] = {}
    dead: dict[str, Chord] = {}
    for qcode, symbols in keys.items():
        for level, symbol in enumerate(symbols):
            chord = Chord((*LEVELS[level], qcode))
            if isinstance(symbol, Dead):
                dead.setdefault(symbol.accent, chord)
            elif symbol:
                direct.setdefault(symbol, chord)
    table: dict[str, tuple[Chord, ...]] = {char: (chord,) for char, chord in direct.items()}
    table.update({" ": (SPACE,), "\n": (ENTER,), "\t": (TAB,)})
    for accent, chord in dead.items():
        if accent in SPACING_ACCENTS:
            table.setdefault(accent, (chord, SPACE))
        for base, result in _composed(accent).items():
            if base in direct:
                table.setdefault(result, (chord, direct[base]))
    return table


def normalize_newlines(text: str) -> str:
    """CRLF and CR become LF: a line break is one Enter, however the text wrote it."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def untypeable(text: str, keymap: Layout) -> list[str]:
    """The characters of ``text`` that ``keymap`` cannot type, each once, in the order
    they first appear."""
    seen: dict[str, None] = {}
    for char in normalize_newlines(text):
        if char not in seen and not keymap.can_type(char):
            seen[char] = None
    return list(seen)


def layouts_typing(chars: Iterable[str]) -> list[str]:
    """The layouts that can type every one of ``chars``."""
    wanted = list(chars)
    return [name for name, lay in LAYOUTS.items() if all(lay.can_type(c) for c in wanted)]


def shown_chars(chars: list[str]) -> str:
    """``é ñ \\x07``: characters as one printable line (controls escaped, at most
    :data:`REFUSAL_SHOWN` named)."""
    shown = " ".join(printable(c, limit=None) for c in chars[:REFUSAL_SHOWN])
    if len(chars) > REFUSAL_SHOWN:
        shown += f" and {len(chars) - REFUSAL_SHOWN} more"
    return shown


def refusal(chars: list[str], keymap: Layout, *, hint: str = "--keymap {} can") -> str:
    """One line saying which characters ``keymap`` cannot type; ``hint`` (with ``{}`` for
    ``de or fr``) names the layouts that can, when some can."""
    count = len(chars)
    text = (f"the {keymap.name} keymap cannot type {count} "
            f"character{'' if count == 1 else 's'} of this text: {shown_chars(chars)}")
    others = [name for name in layouts_typing(chars) if name != keymap.name]
    if others:
        text += f" ({hint.format(' or '.join(others))})"
    return text


def text_strokes(text: str, keymap: Layout) -> list[tuple[Chord, ...]]:
    """Per character of ``text`` (line breaks made LF), the chords that type it on
    ``keymap``; :class:`InvalidInput` naming every character it cannot type (nothing is
    typed then)."""
    bad = untypeable(text, keymap)
    if bad:
        raise InvalidInput(refusal(bad, keymap))
    table = _strokes(keymap.name)
    return [table[char] for char in normalize_newlines(text)]


def text_chords(text: str, keymap: Layout) -> list[Chord]:
    """:func:`text_strokes` as one sequence of chords."""
    return [chord for stroke in text_strokes(text, keymap) for chord in stroke]


# -- key names (the dashboard's keyboard mode) --------------------------------------------

#: Names of keys that type no character → their qcode.
NAMED_KEYS: dict[str, str] = {
    "enter": "ret", "return": "ret", "tab": "tab", "backspace": "backspace",
    "escape": "esc", "esc": "esc", "space": "spc", "up": "up", "down": "down",
    "left": "left", "right": "right", "home": "home", "end": "end", "pageup": "pgup",
    "pgup": "pgup", "pagedown": "pgdn", "pgdn": "pgdn", "insert": "insert",
    "delete": "delete", "print": "print", "pause": "pause", "menu": "menu",
    **{f"f{n}": f"f{n}" for n in range(1, 13)},
}
#: Modifier names → their qcode (left-hand keys; ``altgr`` is the right Alt).
MODIFIERS: dict[str, str] = {
    "ctrl": "ctrl", "control": "ctrl", "alt": "alt", "shift": "shift", "altgr": "alt_r",
    "meta": "meta_l", "super": "meta_l",
}
_MODIFIER_ORDER = ("ctrl", "alt", "meta_l", "shift", "alt_r")


def parse_key(spec: str) -> tuple[frozenset[str], str]:
    """``ctrl+alt+f2`` → ({"ctrl", "alt"}, "f2"); ``ctrl++`` → ({"ctrl"}, "+"). The
    modifiers are qcodes; the key is a name of :data:`NAMED_KEYS` or one character."""
    mods_part, sep, base = spec.rpartition("+")
    if sep and not base:  # "+" itself, or "ctrl++"
        base, mods_part = "+", mods_part[:-1] if mods_part.endswith("+") else mods_part
    modifiers: set[str] = set()
    for name in filter(None, mods_part.split("+")):
        qcode = MODIFIERS.get(name.lower())
        if qcode is None:
            raise InvalidInput(f"unknown modifier {printable(name, limit=20)!r} in "
                               f"{printable(spec, limit=60)!r}")
        modifiers.add(qcode)
    if not base:
        raise InvalidInput("no key named")
    return frozenset(modifiers), base


def key_chords(spec: str, keymap: Layout) -> tuple[Chord, ...]:
    """The chords for one key as the keyboard mode names it: a named key with
    modifiers (``ctrl+alt+delete``, ``shift+f3``; ``f13``-``f24`` are shift+``f1``-``f12``,
    as terminals send them), or a character through the layout (``A``, ``é``,
    ``ctrl+c``, ``alt+x``); :class:`InvalidInput` when there is no such key."""
    modifiers, base = parse_key(spec)
    if len(base) > 1:
        name = base.lower()
        number = name[1:]
        if name.startswith("f") and number.isdigit() and 13 <= int(number) <= 24:
            return (_with(modifiers | {SHIFT}, Chord((f"f{int(number) - 12}",))),)
        qcode = NAMED_KEYS.get(name)
        if qcode is None:
            raise InvalidInput(f"no key named {printable(spec, limit=60)!r}")
        return (_with(modifiers, Chord((qcode,))),)
    chords = keymap.chords(base)
    if chords is None:
        raise InvalidInput(f"the {keymap.name} keymap has no key for "
                           f"{printable(base, limit=None)!r}")
    if len(chords) > 1:
        if modifiers:  # a dead key and the key after it: no modifier can apply
            raise InvalidInput(f"{printable(spec, limit=60)!r}: on the {keymap.name} "
                               "keymap that character takes a dead key; no modifier fits")
        return chords
    return (_with(modifiers, chords[0]),)


def _with(modifiers: frozenset[str], chord: Chord) -> Chord:
    held = set(modifiers) | set(chord.keys[:-1])
    ordered = [m for m in _MODIFIER_ORDER if m in held]
    return Chord((*ordered, chord.keys[-1]))

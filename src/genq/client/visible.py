"""Text another user wrote (prompts, errors, log lines, names), made safe to print on a terminal.

Control characters (C0, DEL, C1) and the Unicode bidi embedding, override and isolate characters
would let that text move the cursor, retitle the window, recolour the screen or reorder what is shown.
Each becomes a visible escape instead: ESC is printed as `\\x1b`, RIGHT-TO-LEFT OVERRIDE as `\\u202e`.
"""
from __future__ import annotations

CONTROL_CODES = [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)]
BIDI_CODES = [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]
KEPT_IN_MULTILINE = ("\n", "\t")
SHORT_ESCAPES = {ord("\n"): "\\n", ord("\t"): "\\t", ord("\r"): "\\r"}


def escape_of(code: int) -> str:
    if code in SHORT_ESCAPES:
        return SHORT_ESCAPES[code]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


ONE_LINE = {code: escape_of(code) for code in CONTROL_CODES + BIDI_CODES}
MULTILINE = {code: text for code, text in ONE_LINE.items() if chr(code) not in KEPT_IN_MULTILINE}


def visible(text: object, multiline: bool = False) -> str:
    """`text` as a string with its control and bidi characters escaped; `multiline` keeps newlines and tabs."""
    return str(text).translate(MULTILINE if multiline else ONE_LINE)

from __future__ import annotations

import pytest

from genq.client.visible import visible


@pytest.mark.parametrize("raw, shown", [
    ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),
    ("\x1b[31mred", "\\x1b[31mred"),
    ("a\u202eb", "a\\u202eb"),
    ("\u2066x\u2069", "\\u2066x\\u2069"),
    ("\x00\x7f\x9b", "\\x00\\x7f\\x9b"),
    ("one\ntwo\tthree\r", "one\\ntwo\\tthree\\r"),
])
def test_control_and_bidi_characters_are_escaped_on_one_line(raw, shown):
    assert visible(raw) == shown


def test_multiline_keeps_newlines_and_tabs_but_escapes_the_rest():
    assert visible("Traceback\n\tat x\x1b[2J\r", multiline=True) == "Traceback\n\tat x\\x1b[2J\\r"


@pytest.mark.parametrize("text", ["a red bicycle", "café 東京 🚲", "path\\to\\x1b", "x" * 1000, ""])
def test_ordinary_text_is_unchanged(text):
    assert visible(text) == text


def test_every_escaped_character_is_gone_from_the_output():
    dangerous = [*map(chr, range(0x20)), "\x7f", *map(chr, range(0x80, 0xA0)),
                 *map(chr, range(0x202A, 0x202F)), *map(chr, range(0x2066, 0x206A))]
    shown = visible("".join(dangerous))
    assert not any(ch in shown for ch in dangerous)
    assert shown.isprintable() and shown.isascii()


def test_non_strings_are_shown_as_text():
    assert visible(42) == "42" and visible(None) == "None"

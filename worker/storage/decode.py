"""Untrusted bucket bytes decoded with bounds: JSON documents and gzip'd JSON lists.

Bucket contents may be careless or hostile, so nothing here trusts a size: gzip is
decompressed piece by piece up to a cap (bombs stop there), JSON is refused before parsing
when it holds more objects and arrays than a cap (Python's parse costs memory per container,
whatever its size), lists are capped in items, and a list too large to hold decoded is
checked in one streaming pass and handed out as a StreamedList, decoded again item by item
on each iteration. Every failure is an ItemError naming the key the bytes came from.
"""

from __future__ import annotations

import codecs
import json
import zlib
from collections.abc import Iterator
from typing import Any

from worker.errors import ItemError
from worker.velero import Obj

MiB = 1024 * 1024
MAX_DECOMPRESSED_BYTES = 128 * MiB  # a gzip'd list decompressed (gzip bombs stop here)
# Python's parse of JSON costs ~100 bytes per object or array whatever their size, so a
# byte cap alone does not bound memory: 128 MiB of "[{},{},…]" would take gigabytes. Real
# files hold ~10 containers per item (a pod volume backup) or ~50 (a Backup).
MAX_JSON_CONTAINERS = 1_000_000
MAX_LIST_ITEMS = 100_000  # items in one list file: each is an API create
MAX_GZIP_MEMBERS = 100  # Velero writes one; thousands of tiny members only burn CPU
_GZIP_CHUNK = 64 * 1024
_PIECE_BYTES = 256 * 1024  # decompressed output per step
# A list decompressing to more than this is streamed instead of held (see gzipped_json_list).
STREAM_LIST_BYTES = 1 * MiB


def json_object(data: bytes, key: str) -> Obj:
    """The JSON object in ``data``. Raises ItemError when it holds too many containers, is
    not JSON, is nested too deeply, or is not an object."""
    _check_containers(data, key)
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ItemError(f"{key}: not valid JSON: {exc}") from None
    except RecursionError:
        raise ItemError(f"{key}: JSON nested too deeply") from None
    if not isinstance(value, dict):
        raise ItemError(f"{key}: expected a JSON object, got {type(value).__name__}")
    return value


def gzipped_json_list(data: bytes, key: str) -> list[Obj] | StreamedList:
    """The list of objects (each with a ``metadata`` object) in gzip'd JSON ``data``;
    ``null`` is empty. Like Go's json.Decoder, only the first JSON value counts.

    Every check passes before anything is returned, so a bad item rejects the whole list
    before one object is created. A list that decompresses to more than STREAM_LIST_BYTES
    is not held in memory: it is checked in a streaming pass and handed out as a
    StreamedList, so memory does not grow with the file (only with its largest item)."""
    text = _scan(data, key)
    if text is None:
        streamed = StreamedList(data, key)
        for _ in streamed:  # validates every item; raises ItemError
            pass
        return streamed
    try:
        value, _ = json.JSONDecoder().raw_decode(text.decode("utf-8").lstrip())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ItemError(f"{key}: not valid JSON: {exc}") from None
    except RecursionError:
        raise ItemError(f"{key}: JSON nested too deeply") from None
    if value is None:
        return []
    if not isinstance(value, list):
        raise ItemError(f"{key}: expected a JSON list, got {type(value).__name__}")
    if len(value) > MAX_LIST_ITEMS:
        raise ItemError(f"{key}: more than {MAX_LIST_ITEMS} items ({len(value)})")
    for index, item in enumerate(value):
        _check_item(item, index, key)
    return value


def _check_item(item: Any, index: int, key: str) -> None:
    if not isinstance(item, dict) or not isinstance(item.get("metadata"), dict):
        raise ItemError(f"{key}: item {index} is not an object with metadata")


def _scan(data: bytes, key: str) -> bytes | None:
    """Decompress everything once, without parsing: gzip errors, the decompressed cap and
    the container cap are found here. The text when it is at most STREAM_LIST_BYTES, else
    None (the caller streams)."""
    kept: list[bytes] | None = []
    size = containers = 0
    for piece in gunzip_pieces(data, MAX_DECOMPRESSED_BYTES, key):
        size += len(piece)
        containers += piece.count(b"{") + piece.count(b"[")
        if containers > MAX_JSON_CONTAINERS:
            raise ItemError(
                f"{key}: more than {MAX_JSON_CONTAINERS} JSON objects and arrays "
                f"({containers} so far)"
            )
        if kept is not None:
            kept.append(piece)
            if size > STREAM_LIST_BYTES:
                kept = None
    return b"".join(kept) if kept is not None else None


class StreamedList:
    """A large gzip'd JSON list, decoded item by item on each iteration (the compressed
    bytes are all it holds). Raises ItemError while iterating when the data is bad;
    ``gzipped_json_list`` iterates it once before handing it out, so its users never see
    that."""

    def __init__(self, data: bytes, key: str) -> None:
        self._data = data
        self._key = key

    def __iter__(self) -> Iterator[Obj]:
        key = self._key
        reader = _TextReader(gunzip_pieces(self._data, MAX_DECOMPRESSED_BYTES, key), key)
        first = reader.peek_value_start()
        if first == "n" and reader.take_literal("null"):
            reader.drain()
            return
        if first != "[":
            reader.drain()  # gzip trouble first, as for small lists
            raise ItemError(f"{key}: expected a JSON list, got {_json_type(first, reader)}")
        reader.advance(1)
        index = 0
        if reader.peek_value_start() == "]":
            reader.drain()
            return
        while True:
            if index >= MAX_LIST_ITEMS:
                raise ItemError(f"{key}: more than {MAX_LIST_ITEMS} items")
            item = reader.value()
            _check_item(item, index, key)
            yield item
            index += 1
            separator = reader.peek_value_start()
            reader.advance(1)
            if separator == "]":
                reader.drain()  # the rest of the file: gzip integrity, like small lists
                return
            if separator != ",":
                raise ItemError(f"{key}: not valid JSON: expected ',' or ']' after item {index}")


def _json_type(first: str, reader: _TextReader) -> str:
    """The Python type name of the JSON value starting with ``first``."""
    if first == "{":
        return "dict"
    if first == '"':
        return "str"
    if first in "tf":
        return "bool"
    if first == "-" or first.isdigit():
        return "float" if any(c in reader.number_text() for c in ".eE") else "int"
    raise ItemError(f"{reader.key}: not valid JSON: unexpected {first!r}")


class _TextReader:
    """UTF-8 text from decompressed pieces, consumed value by value with bounded memory:
    only the unparsed rest is kept, and it grows geometrically while a value is
    incomplete, so a large item is parsed a logarithmic number of times, not per piece."""

    def __init__(self, pieces: Iterator[bytes], key: str) -> None:
        self.key = key
        self._pieces = pieces
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._json = json.JSONDecoder()
        self._buf = ""
        self._pos = 0
        self._eof = False

    def _more(self) -> bool:
        """Append at least as much text as is unparsed now; False at the end."""
        if self._eof:
            return False
        if self._pos > STREAM_LIST_BYTES:
            self._buf, self._pos = self._buf[self._pos :], 0
        wanted = max(_GZIP_CHUNK, len(self._buf) - self._pos)
        added: list[str] = []
        size = 0
        try:
            while size < wanted:
                piece = next(self._pieces, None)
                if piece is None:
                    added.append(self._decoder.decode(b"", final=True))
                    self._eof = True
                    break
                text = self._decoder.decode(piece)
                added.append(text)
                size += len(text)
        except UnicodeDecodeError as exc:
            raise ItemError(f"{self.key}: not valid JSON: {exc}") from None
        self._buf += "".join(added)
        return True

    def peek_value_start(self) -> str:
        """The next non-whitespace character, or an ItemError at the end of the text."""
        while True:
            while self._pos < len(self._buf) and self._buf[self._pos] in " \t\n\r":
                self._pos += 1
            if self._pos < len(self._buf):
                return self._buf[self._pos]
            if not self._more():
                raise ItemError(f"{self.key}: not valid JSON: unexpected end of data")

    def advance(self, count: int) -> None:
        self._pos += count

    def take_literal(self, literal: str) -> bool:
        while len(self._buf) - self._pos < len(literal) and self._more():
            pass
        if self._buf.startswith(literal, self._pos):
            self._pos += len(literal)
            return True
        return False

    def number_text(self) -> str:
        end = self._pos
        while True:
            while end < len(self._buf) and self._buf[end] in "+-.0123456789eE":
                end += 1
            if end < len(self._buf) or not self._more():
                return self._buf[self._pos : end]

    def value(self) -> Any:
        """Decode the next JSON value (reading more text while it is incomplete)."""
        self.peek_value_start()
        while True:
            try:
                value, end = self._json.raw_decode(self._buf, self._pos)
            except json.JSONDecodeError as exc:
                # Only an error at the end of the text so far may be a value cut short;
                # anything earlier is bad JSON, found without reading the rest.
                cut = exc.pos >= len(self._buf) - 16 or exc.msg.startswith("Unterminated")
                if cut and self._more():
                    continue
                raise ItemError(f"{self.key}: not valid JSON: {exc}") from None
            except RecursionError:
                raise ItemError(f"{self.key}: JSON nested too deeply") from None
            if end == len(self._buf) and not self._eof and self._buf[end - 1] not in '}]"el':
                # A number cut at the end of the text so far may go on: read on and retry.
                self._more()
                continue
            self._pos = end
            return value

    def drain(self) -> None:
        """Decompress the rest (nothing is parsed): gzip errors and caps still apply."""
        for _ in self._pieces:
            pass


def _check_containers(data: bytes, key: str) -> None:
    """Refuse, before parsing, JSON with more objects and arrays than MAX_JSON_CONTAINERS
    (an upper bound: brackets inside strings count too)."""
    containers = data.count(b"{") + data.count(b"[")
    if containers > MAX_JSON_CONTAINERS:
        raise ItemError(
            f"{key}: more than {MAX_JSON_CONTAINERS} JSON objects and arrays ({containers})"
        )


def gunzip_pieces(data: bytes, limit: int, key: str) -> Iterator[bytes]:
    """Decompress gzip (several members, as Go's gzip reader does, up to MAX_GZIP_MEMBERS)
    up to ``limit`` bytes, piece by piece, no piece larger than _PIECE_BYTES (however well
    the input compresses). Raises ItemError when the data is not gzip, is truncated, or
    inflates beyond the limit.

    Input goes in by chunks, so what is left after a member is never the whole rest of a
    large file (copying it for each of many members is quadratic); the errors come when
    the data that has them is reached."""
    total = 0
    view = memoryview(data)
    pos = 0
    pending: bytes = b""  # input not taken yet: a capped piece's rest, or the next member
    flush = False  # a capped piece may have more output queued with no input left
    inflater: Any = None
    members = 0
    while pending or flush or pos < len(view):
        if inflater is None:
            members += 1
            if members > MAX_GZIP_MEMBERS:
                raise ItemError(f"{key}: more than {MAX_GZIP_MEMBERS} gzip members")
            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        if pending or flush:
            chunk: bytes | memoryview = pending
            pending, flush = b"", False
        else:
            chunk = view[pos : pos + _GZIP_CHUNK]
            pos += len(chunk)
        cap = min(limit + 1 - total, _PIECE_BYTES)
        try:
            piece = inflater.decompress(chunk, cap)
        except zlib.error as exc:
            raise ItemError(f"{key}: not valid gzip: {exc}") from None
        total += len(piece)
        if total > limit:
            raise ItemError(f"{key}: decompresses to more than {limit} bytes")
        if piece:
            yield piece
        if inflater.eof:
            pending = inflater.unused_data
            inflater = None
        elif inflater.unconsumed_tail:
            pending = inflater.unconsumed_tail
        elif len(piece) == cap:
            flush = True
    if inflater is not None:
        raise ItemError(f"{key}: truncated gzip data")

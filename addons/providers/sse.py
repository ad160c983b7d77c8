"""Incremental server-sent-events decoder (the framing of the WHATWG EventSource spec).

It runs on every streamed chunk that passes the gateway, so it is written for speed:
- only the *new* chunk is scanned for line breaks, and a partial line is kept in a
  `bytearray` (amortized appends), so 1-byte chunks cost O(1) each, never O(buffer);
- bytes are split into lines first and each complete line is decoded on its own, so a UTF-8
  character split across chunks is decoded whole (errors='replace' for really bad bytes);
- `bytes.splitlines` breaks only at CR, LF and CRLF (unlike `str.splitlines`), which is
  exactly the SSE set of line endings.
"""

from __future__ import annotations

from llmsm.addons.providers.base import SSEEvent

__all__ = ["SSEDecoder"]

_CR = 0x0D
_LF = 0x0A
_COLON = 0x3A
_BOM = b"\xef\xbb\xbf"


class SSEDecoder:
    """Feed raw body bytes in any chunking; get complete events back in order.

    `feed(chunk)` returns the events completed by this chunk; `close()` flushes a last event
    whose blank line never came (a stream cut right after its data line).
    """

    __slots__ = ("_partial", "_skip_lf", "_at_start", "_event", "_data")

    def __init__(self) -> None:
        self._partial = bytearray()  # bytes of a line whose line break has not arrived yet
        self._skip_lf = False  # the last chunk ended in CR: a LF opening the next one pairs with it
        self._at_start = True  # a BOM is only meaningful before the first line
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if not chunk:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[0] == _LF:  # second half of a CRLF split between two chunks
                chunk = chunk[1:]
                if not chunk:
                    return []
        if b"\n" not in chunk and b"\r" not in chunk:
            self._partial += chunk
            return []
        if self._partial:
            self._partial += chunk
            buffer = bytes(self._partial)
            self._partial.clear()
        else:
            buffer = bytes(chunk)
        lines = buffer.splitlines()
        last_byte = buffer[-1]
        if last_byte == _CR:
            self._skip_lf = True
        elif last_byte != _LF:
            self._partial += lines.pop()  # the unterminated tail waits for more bytes
        events: list[SSEEvent] = []
        for line in lines:
            self._process_line(line, events)
        return events

    def close(self) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        if self._partial:
            line = bytes(self._partial)
            self._partial.clear()
            self._process_line(line, events)
        if self._data:
            events.append(SSEEvent(self._event, "\n".join(self._data)))
        self._event = None
        self._data = []
        self._skip_lf = False
        return events

    def _process_line(self, line: bytes, events: list[SSEEvent]) -> None:
        if self._at_start:
            self._at_start = False
            if line.startswith(_BOM):
                line = line[3:]
        if not line:  # a blank line ends the event
            if self._data:
                events.append(SSEEvent(self._event, "\n".join(self._data)))
                self._data = []
            self._event = None
            return
        if line[0] == _COLON:  # comment / keep-alive
            return
        if line.startswith(b"data:"):  # the hot path: most lines are data lines
            value = line[5:]
        else:
            name, _, value = line.partition(b":")
            if name == b"event":
                if value[:1] == b" ":
                    value = value[1:]
                self._event = value.decode("utf-8", "replace") or None
                return
            if name != b"data":
                return  # id, retry and unknown fields do not matter to the parsers
            # `data` without a colon is a data line with an empty value
        if value[:1] == b" ":
            value = value[1:]
        self._data.append(value.decode("utf-8", "replace"))

#!/usr/bin/env python3
"""An independent check of HJ 212 framing: length field and CRC.

Written from HJ 212-2017 section 6.3 and Appendix A, sharing no code with the Rust codec, so that
the end-to-end tests can have the gateway's output judged by a second implementation.

A frame is ``##`` + 4 decimal digits (the data segment's length in bytes) + the data segment +
4 hex digits (its CRC, either case) + CR LF. The CRC is the standard's own algorithm, which is not
CRC-16/MODBUS: the register is shifted right by 8 *before* the byte is XORed in::

    reg = 0xFFFF
    for b in data_segment:
        reg = (reg >> 8) ^ b
        8 times: reg = (reg >> 1) ^ 0xA001 if reg & 1 else reg >> 1

Input is a byte stream (files, or standard input when none is named): frames are split at ``##``
and the next CR LF, so a wrong length field is reported, not trusted. Bytes outside frames are
counted as garbage, a last ``##`` without CR LF as incomplete. With ``--vectors`` each input is
read in the shared test-vector format instead (one packet a line, the CR LF written as the four
characters ``\\r\\n``, other lines ignored) and turned into that byte stream.

Prints one JSON object:

    {"frames": n, "ok": n, "bad": n, "long": n, "garbage_bytes": n,
     "incomplete_bytes": n, "by_cn": {"2011": n, ...}, "errors": [...]}

``long`` counts frames whose data segment exceeds 1024 bytes, HJ 212-2017's limit (reported, not
an error: older senders exceed it). ``errors`` lists the first 20 bad frames, each with its index,
byte offset, reason and the start of the frame.

Exit status: 0 when every frame passed, 1 when a frame failed, 2 on a usage or read error.
"""

import json
import sys

MAX_DATA_2017 = 1024
MAX_ERRORS = 20


def crc16(data):
    """The HJ 212 CRC of ``data`` (bytes), as an int."""
    reg = 0xFFFF
    for b in data:
        reg = (reg >> 8) ^ b
        for _ in range(8):
            if reg & 1:
                reg = (reg >> 1) ^ 0xA001
            else:
                reg >>= 1
    return reg


def is_digits(b):
    return len(b) > 0 and all(0x30 <= c <= 0x39 for c in b)


def is_hex(b):
    return len(b) > 0 and all(chr(c) in "0123456789abcdefABCDEF" for c in b)


def field(data, name):
    """The value of header field ``name`` (``CN``, ``QN`` ...) in a data segment, or None."""
    head = data.split(b"CP=&&", 1)[0]
    for part in head.split(b";"):
        key, sep, value = part.partition(b"=")
        if sep and key == name:
            return value.decode("ascii", "replace")
    return None


def check_frame(frame):
    """Why ``frame`` (``##`` ... CR LF) fails, or None when it passes."""
    if len(frame) < 2 + 4 + 4 + 2:
        return "too short for a frame"
    length = frame[2:6]
    if not is_digits(length):
        return "length field %r is not 4 decimal digits" % length.decode("latin-1")
    data = frame[6:-6]
    crc_text = frame[-6:-2]
    if not is_hex(crc_text):
        return "CRC field %r is not 4 hex digits" % crc_text.decode("latin-1")
    if int(length) != len(data):
        return "length field says %d, data segment has %d bytes" % (int(length), len(data))
    want = crc16(data)
    if int(crc_text, 16) != want:
        return "CRC %s, computed %04X" % (crc_text.decode("ascii"), want)
    return None


def split(stream):
    """Yields ("frame", offset, bytes), ("garbage", offset, n) and ("incomplete", offset, n)."""
    pos = 0
    while pos < len(stream):
        start = stream.find(b"##", pos)
        if start < 0:
            yield ("garbage", pos, len(stream) - pos)
            return
        if start > pos:
            yield ("garbage", pos, start - pos)
        end = stream.find(b"\r\n", start + 2)
        if end < 0:
            yield ("incomplete", start, len(stream) - start)
            return
        yield ("frame", start, stream[start:end + 2])
        pos = end + 2


def vectors_to_stream(text):
    """Packet lines of the shared vector files, as bytes on the wire."""
    out = bytearray()
    for line in text.splitlines():
        if len(line) >= 6 and line.startswith("##") and line[2:6].isdigit():
            if line.endswith("\\r\\n"):
                line = line[:-4]
            out += line.encode("utf-8") + b"\r\n"
    return bytes(out)


def summarize(stream):
    summary = {
        "frames": 0,
        "ok": 0,
        "bad": 0,
        "long": 0,
        "garbage_bytes": 0,
        "incomplete_bytes": 0,
        "by_cn": {},
        "errors": [],
    }
    for kind, offset, value in split(stream):
        if kind == "garbage":
            summary["garbage_bytes"] += value
            continue
        if kind == "incomplete":
            summary["incomplete_bytes"] += value
            continue
        index = summary["frames"]
        summary["frames"] += 1
        reason = check_frame(value)
        if reason is None:
            summary["ok"] += 1
            data = value[6:-6]
            if len(data) > MAX_DATA_2017:
                summary["long"] += 1
            cn = field(data, b"CN") or "?"
            summary["by_cn"][cn] = summary["by_cn"].get(cn, 0) + 1
        else:
            summary["bad"] += 1
            if len(summary["errors"]) < MAX_ERRORS:
                summary["errors"].append({
                    "index": index,
                    "offset": offset,
                    "error": reason,
                    "frame": value[:120].decode("utf-8", "replace"),
                })
    return summary


def main(argv):
    args = argv[1:]
    vectors = False
    if args and args[0] == "--vectors":
        vectors = True
        args = args[1:]
    if any(a.startswith("-") and a != "-" for a in args):
        sys.stderr.write("usage: hj212_check.py [--vectors] [FILE ...]\n")
        return 2
    chunks = []
    try:
        for name in args or ["-"]:
            if name == "-":
                raw = sys.stdin.buffer.read()
            else:
                with open(name, "rb") as f:
                    raw = f.read()
            chunks.append(vectors_to_stream(raw.decode("utf-8")) if vectors else raw)
    except (OSError, UnicodeDecodeError) as e:
        sys.stderr.write("error: %s\n" % e)
        return 2
    summary = summarize(b"".join(chunks))
    print(json.dumps(summary, sort_keys=True))
    return 0 if summary["bad"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))

#!/usr/bin/python3
"""An independent reader of TensorBoard event files, written from the formats' specifications (no TensorFlow, no
protobuf library, nothing shared with AlignSharp's writer): TFRecord framing (u64 length, masked CRC-32C of the
length, data, masked CRC-32C of the data; little-endian) and the protobuf wire format of tensorflow.Event
(wall_time = 1 double, step = 2 int64, file_version = 3 string, summary = 5 {value = 1 {tag = 1, simple_value = 2
float}}, session_log = 7 {status = 1}). Prints one JSON object per event; exits non-zero on any CRC mismatch or
malformed record.

usage: read_tfevents.py FILE
"""
import json
import struct
import sys


def crc32c(data):
    # Bitwise CRC-32C: reflected Castagnoli polynomial 0x82F63B78, init and final XOR 0xFFFFFFFF.
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def masked(data):
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def varint(buf, pos):
    result, shift = 0, 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return result, pos


def fields(buf):
    """Yields (field number, wire type, value) of a protobuf message."""
    pos = 0
    while pos < len(buf):
        key, pos = varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            n, pos = varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError("unsupported wire type %d" % wire)
        yield field, wire, value
    if pos != len(buf):
        raise ValueError("message overruns its length")


def event(buf):
    out = {}
    for field, wire, value in fields(buf):
        if field == 1 and wire == 1:
            out["wall_time"] = struct.unpack("<d", value)[0]
        elif field == 2 and wire == 0:
            out["step"] = value if value < 1 << 63 else value - (1 << 64)
        elif field == 3 and wire == 2:
            out["file_version"] = value.decode("utf-8")
        elif field == 5 and wire == 2:
            values = []
            for f, w, v in fields(value):
                if f != 1 or w != 2:
                    raise ValueError("Summary field %d" % f)
                tag, simple = None, None
                for vf, vw, vv in fields(v):
                    if vf == 1 and vw == 2:
                        tag = vv.decode("utf-8")
                    elif vf == 2 and vw == 5:
                        simple = struct.unpack("<f", vv)[0]
                values.append([tag, simple])
            out["values"] = values
        elif field == 7 and wire == 2:
            out["session_log"] = dict((f, v) for f, w, v in fields(value) if w == 0)
        else:
            raise ValueError("unexpected Event field %d (wire type %d)" % (field, wire))
    return out


def main(path):
    data = open(path, "rb").read()
    pos = 0
    while pos < len(data):
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        if masked(header) != length_crc:
            sys.exit("%s: bad length CRC at byte %d" % (path, pos))
        body = data[pos + 12:pos + 12 + length]
        (body_crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
        if len(body) != length or masked(body) != body_crc:
            sys.exit("%s: bad data CRC at byte %d" % (path, pos))
        print(json.dumps(event(body), allow_nan=True))
        pos += 16 + length


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--crc32c":
        print(crc32c(sys.argv[2].encode("utf-8")))
    else:
        main(sys.argv[1])

"""etcd's gRPC Range, encoded and decoded by hand: just the protobuf fields the probes need
(etcdserverpb/rpc.proto, mvccpb/kv.proto), so that no gRPC or protobuf package is needed.

RangeRequest  {key=1 bytes, range_end=2 bytes, limit=3 int64, keys_only=8 bool}
RangeResponse {header=1 ResponseHeader, kvs=2 repeated KeyValue, more=3 bool, count=4 int64}
ResponseHeader{cluster_id=1, member_id=2, revision=3, raft_term=4}   (varints)
KeyValue      {key=1 bytes, ...}
"""
from __future__ import annotations

RANGE_METHOD = "/etcdserverpb.KV/Range"
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    key = _varint(number << 3 | wire_type)
    return key + (_varint(len(payload)) + payload if wire_type == _BYTES else payload)


def range_request(key: bytes, range_end: bytes, limit: int, keys_only: bool) -> bytes:
    return (_field(1, _BYTES, key) + _field(2, _BYTES, range_end)
            + _field(3, _VARINT, _varint(limit)) + _field(8, _VARINT, _varint(int(keys_only))))


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(data):
            raise ValueError("truncated varint")
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if not byte & 0x80:
            return value, i


def _fields(data: bytes):
    """(number, value) for each field: an int for varints, bytes for the rest."""
    i = 0
    while i < len(data):
        key, i = _read_varint(data, i)
        number, wire_type = key >> 3, key & 7
        if wire_type == _VARINT:
            value, i = _read_varint(data, i)
        elif wire_type == _BYTES:
            length, i = _read_varint(data, i)
            if i + length > len(data):
                raise ValueError("truncated field")
            value, i = data[i:i + length], i + length
        elif wire_type in (_FIXED64, _FIXED32):
            size = 8 if wire_type == _FIXED64 else 4
            value, i = data[i:i + size], i + size
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
        yield number, value


def parse_range_response(message: bytes) -> dict | None:
    """{"header": {...}, "keys": [...], "more": bool, "count": int}, shaped like the JSON
    gateway's answer; None when the message is no RangeResponse (no header)."""
    names = {1: "cluster_id", 2: "member_id", 3: "revision", 4: "raft_term"}
    found: dict = {"keys": [], "more": False, "count": 0}
    try:
        for number, value in _fields(message):
            if number == 1 and isinstance(value, bytes):
                found["header"] = {names[n]: v for n, v in _fields(value) if n in names}
            elif number == 2 and isinstance(value, bytes):
                key = next((v for n, v in _fields(value) if n == 1), b"")
                found["keys"].append(key.decode(errors="replace"))
            elif number == 3:
                found["more"] = bool(value)
            elif number == 4:
                found["count"] = value
    except ValueError:
        return None
    return found if "header" in found else None

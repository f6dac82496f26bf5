"""Read an offline wandb run (`run-*.wandb`) back: the records wandb-core wrote, as wandb's own protobuf messages.

wandb 0.31 ships no Python reader for its run file (the `wandb.sdk.internal.datastore` module of older releases is
gone; the Go core writes and syncs it). The file is wandb's LevelDB-style log: a 7-byte header
(":W&B", magic 0xBEE1, a version byte: 0 in wandb 0.31), then 32 KiB blocks of chunks, each with a 7-byte header (CRC-32C, length,
type: 1 full, 2 first, 3 middle, 4 last); a block's tail shorter than a chunk header is zero padding. Each
reassembled payload is one `wandb.proto.wandb_internal_pb2.Record`.
"""

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: str | Path) -> list[wandb_internal_pb2.Record]:
    data = Path(path).read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:HEADER])
    assert (ident, magic) == (b":W&B", 0xBEE1), (ident, magic)
    records, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        space = BLOCK - pos % BLOCK
        if space < HEADER:  # block tail: padding
            pos += space
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        pos += HEADER
        chunk, pos = data[pos : pos + length], pos + length
        if kind == FULL:
            records.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            records.append(pending + chunk)
        elif kind == 0 and length == 0:  # zero padding up to the end of the block
            pos += BLOCK - pos % BLOCK if pos % BLOCK else 0
    return [wandb_internal_pb2.Record.FromString(raw) for raw in records]


def history(records) -> list[dict]:
    """Each `wandb.log` row as {key: value} (values decoded from JSON)."""
    rows = []
    for record in records:
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            )
    return rows


def config(records) -> dict:
    """The run config: every config update, merged in order."""
    merged = {}
    for record in records:
        if record.WhichOneof("record_type") == "config":
            for item in record.config.update:
                merged[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return merged

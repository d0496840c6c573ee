"""What the lifecycle report tests feed it: a real PNG and a pretraining stage's result."""

from __future__ import annotations

import struct
import zlib


def tiny_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", pixels)
        + chunk(b"IEND", b"")
    )


def pretrain_result(run_id: str, uri: str) -> dict:
    return {
        "trained": {
            "mlflow_run_id": run_id,
            "val_loss": 4.9,
            "unigram_val_loss": 6.1,
            "val_bpb": 1.8,
            "unigram_val_bpb": 2.3,
            "tokens": {"table": "/lake/gold/tokens", "version": 3, "rows": 1200},
        },
        "registered": {"uri": uri, "champion": True},
        "mlflow_run_id": run_id,
    }

"""The IDX format of MNIST (LeCun et al.): a tiny header, then a big-endian array, often gzipped.

    bytes 0–1: 0, 1–2: type code (0x08 = uint8 …), 3: number of dimensions n,
    then n big-endian uint32 sizes, then the values in row-major order.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from flowforge.errors import FlowforgeError

IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(data: bytes, source: str = "IDX data") -> np.ndarray:
    """The array held by IDX bytes; a bad header or a wrong length is a :class:`FlowforgeError`.

    >>> from flowforge.data.idx import parse_idx
    >>> parse_idx(bytes([0, 0, 8, 1, 0, 0, 0, 2, 7, 9])).tolist()
    [7, 9]
    """
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_TYPES:
        raise FlowforgeError(f"{source}: not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise FlowforgeError(f"{source}: truncated IDX header")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_TYPES[data[2]])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise FlowforgeError(f"{source}: IDX header promises shape {shape} ({expected} bytes) "
                             f"but the file holds {len(data)} bytes")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, gzipped (``.gz``) or not."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":  # the gzip magic, whatever the suffix
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise FlowforgeError(f"{path}: no such file") from None
    except (OSError, EOFError) as err:
        raise FlowforgeError(f"{path}: cannot be read ({getattr(err, 'strerror', None) or err})") from None
    return parse_idx(raw, str(path))

"""TensorBoard event files, written and read without TensorFlow: a few protobuf fields, TFRecord framing, CRC32C.

A file is a sequence of TFRecords, each `uint64 length | uint32 masked_crc32c(length) | data | uint32
masked_crc32c(data)` (little-endian), every `data` a serialized `tensorflow.Event`:

    Event          1: wall_time (double)  2: step (int64)  3: file_version (string)  5: summary (Summary)
    Summary        1: value (repeated Summary.Value)
    Summary.Value  1: tag (string)  2: simple_value (float)  5: histo (HistogramProto)
    HistogramProto 1: min  2: max  3: num  4: sum  5: sum_squares (double)  6: bucket_limit  7: bucket (packed doubles)

The first event of a file holds file_version "brain.Event:2". `tensorboard --logdir` reads these files;
`read_events` reads them back (checking every CRC), for tests and scripts.
"""
import os
import socket
import struct
import time

import numpy as np


# -- CRC32C (Castagnoli), masked as TFRecord requires ---------------------------------------------------------
def _crc_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data):
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(data):
    """One TFRecord holding `data`."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


# -- protobuf: the handful of field kinds the event protos use ------------------------------------------------
def _varint(n):
    out = bytearray()
    n &= (1 << 64) - 1                 # negative int64s as two's complement, as protobuf does
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _key(field, wire):
    return _varint(field << 3 | wire)


def _bytes(field, data):
    return _key(field, 2) + _varint(len(data)) + data


def _double(field, value):
    return _key(field, 1) + struct.pack("<d", value)


def _packed_doubles(field, values):
    return _bytes(field, np.asarray(values, "<f8").tobytes())


def event(wall_time, step, summary=None, file_version=None):
    """A serialized Event; summary: serialized Summary.Value messages."""
    out = _double(1, wall_time) + _key(2, 0) + _varint(int(step))
    if file_version is not None:
        out += _bytes(3, file_version.encode())
    if summary:
        out += _bytes(5, b"".join(_bytes(1, v) for v in summary))
    return out


def scalar_value(tag, value):
    return _bytes(1, tag.encode()) + _key(2, 5) + struct.pack("<f", float(value))


def histogram_value(tag, values, bins=30):
    """A Summary.Value holding the histogram of `values` in `bins` equal-width buckets."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        v = np.zeros(1)
    lo, hi = float(v.min()), float(v.max())
    counts, edges = np.histogram(v, bins=bins if hi > lo else 1)
    histo = (_double(1, lo) + _double(2, hi) + _double(3, v.size) + _double(4, float(v.sum()))
             + _double(5, float(np.dot(v, v))) + _packed_doubles(6, edges[1:]) + _packed_doubles(7, counts))
    return _bytes(1, tag.encode()) + _bytes(5, histo)


# -- the writer -----------------------------------------------------------------------------------------------
class EventFileWriter:
    """Appends events to a new file `events.out.tfevents.<time>.<host>.<pid>.<n>.v2` in `logdir`."""
    _count = 0

    def __init__(self, logdir):
        os.makedirs(logdir, exist_ok=True)
        EventFileWriter._count += 1
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{self._count}.v2"
        self.path = os.path.join(logdir, name)
        self._file = open(self.path, "wb")
        self._file.write(tfrecord(event(time.time(), 0, file_version="brain.Event:2")))

    def add(self, step, values, wall_time=None):
        """Write one event at `step` holding the serialized Summary.Values `values`."""
        self._file.write(tfrecord(event(time.time() if wall_time is None else wall_time, step, values)))

    def add_scalars(self, scalars, step):
        """scalars: {tag: number}, all at `step`, in one event."""
        if scalars:
            self.add(step, [scalar_value(tag, v) for tag, v in scalars.items()])

    def add_histogram(self, tag, values, step, bins=30):
        self.add(step, [histogram_value(tag, values, bins)])

    def flush(self):
        self._file.flush()

    def close(self):
        if not self._file.closed:
            self._file.close()


# -- reading back ---------------------------------------------------------------------------------------------
def _read_varint(buf, i):
    shift = n = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def parse_message(buf):
    """{field number: [raw values]} of a serialized protobuf message (varints as ints, fixed64/32 as bytes)."""
    out, i = {}, 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 2:
            size, i = _read_varint(buf, i)
            value, i = buf[i:i + size], i + size
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"protobuf wire type {wire} (field {field}) is not used by event files")
        out.setdefault(field, []).append(value)
    return out


def read_records(path):
    """The data of every TFRecord in the file, checking both CRCs of each."""
    with open(path, "rb") as f:
        blob = f.read()
    out, i = [], 0
    while i < len(blob):
        header = blob[i:i + 8]
        (length,), (crc,) = struct.unpack("<Q", header), struct.unpack("<I", blob[i + 8:i + 12])
        data = blob[i + 12:i + 12 + length]
        (data_crc,) = struct.unpack("<I", blob[i + 12 + length:i + 16 + length])
        if crc != masked_crc32c(header) or data_crc != masked_crc32c(data) or len(data) != length:
            raise ValueError(f"{path}: corrupt TFRecord at byte {i}")
        out.append(data)
        i += 16 + length
    return out


def read_events(path):
    """Every event of an event file as a dict: wall_time, step, file_version (or None), scalars {tag: value},
    histograms {tag: {min, max, num, sum, sum_squares, bucket_limit, bucket}}."""
    events = []
    for data in read_records(path):
        m = parse_message(data)
        ev = {"wall_time": struct.unpack("<d", m[1][0])[0], "step": m.get(2, [0])[0],
              "file_version": m[3][0].decode() if 3 in m else None, "scalars": {}, "histograms": {}}
        for raw in parse_message(m[5][0]).get(1, []) if 5 in m else []:
            v = parse_message(raw)
            tag = v[1][0].decode()
            if 2 in v:
                ev["scalars"][tag] = struct.unpack("<f", v[2][0])[0]
            if 5 in v:
                h = parse_message(v[5][0])
                ev["histograms"][tag] = {**{k: struct.unpack("<d", h[f][0])[0] for f, k in
                                            enumerate(("min", "max", "num", "sum", "sum_squares"), 1) if f in h},
                                         "bucket_limit": np.frombuffer(h[6][0], "<f8").tolist() if 6 in h else [],
                                         "bucket": np.frombuffer(h[7][0], "<f8").tolist() if 7 in h else []}
        events.append(ev)
    return events

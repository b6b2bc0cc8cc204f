"""Reader for dlib's binary serialization (the ``.dat`` model files).

Only what the converters need: integers, floats, bools, strings and tensors. The format is
described in ../shared/MODELS.md; everything here is read defensively and a malformed file
raises :class:`DeviceBioError` (MODEL_BUILD_FAILED), never an IndexError from deep inside.
"""

from __future__ import annotations

import builtins
import struct

import numpy as np

from devicebio.errors import DeviceBioError, Reason


class DatReader:
    """A cursor over the bytes of a dlib ``.dat`` file."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _fail(self, what: str) -> DeviceBioError:
        return DeviceBioError(Reason.MODEL_BUILD_FAILED, f"dlib .dat: {what} at byte {self.pos}")

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self._fail(f"need {n} bytes, file ends")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def int(self) -> int:
        control = self.take(1)[0]
        size = control & 0x0F
        if size > 8:
            raise self._fail(f"integer of {size} bytes")
        value = int.from_bytes(self.take(size), "little") if size else 0
        return -value if control & 0x80 else value

    def float(self) -> float:
        """dlib writes a float as mantissa and exponent integers: value = m * 2**e."""
        mantissa = self.int()
        exponent = self.int()
        # dlib's encodings of the special values (float_details: is_inf / is_ninf / is_nan)
        if exponent == 32000:
            return float("inf")
        if exponent == 32001:
            return float("-inf")
        if exponent == 32002:
            return float("nan")
        return float(mantissa) * 2.0**exponent

    def bool(self) -> bool:
        ch = self.take(1)
        if ch not in (b"0", b"1"):
            raise self._fail(f"bool byte {ch!r}")
        return ch == b"1"

    def string(self) -> str:
        n = self.int()
        return self.take(n).decode("latin-1")

    def expect_string(self, expected: str) -> None:
        got = self.string()
        if got != expected:
            raise self._fail(f"expected {expected!r}, found {got!r}")

    def expect_int(self, expected: builtins.int, what: str = "version") -> None:
        got = self.int()
        if got != expected:
            raise self._fail(f"{what} {got}, expected {expected}")

    def tensor(self) -> np.ndarray:
        """A dlib ``tensor`` (version 2): shape (n, k, nr, nc), then float32 little-endian."""
        self.expect_int(2, "tensor version")
        shape = tuple(self.int() for _ in range(4))
        count = 1
        for dim in shape:
            if dim < 0:
                raise self._fail(f"negative tensor dimension {shape}")
            count *= dim
        raw = self.take(4 * count)
        return np.frombuffer(raw, dtype="<f4").reshape(shape).copy()

    def alias_tensor(self) -> tuple[builtins.int, builtins.int, builtins.int, builtins.int]:
        """A dlib ``alias_tensor`` (version 1): only a shape (n, k, nr, nc), no data."""
        self.expect_int(1, "alias_tensor version")
        n, k, nr, nc = (self.int() for _ in range(4))
        if min(n, k, nr, nc) < 0:
            raise self._fail(f"negative alias_tensor dimension {(n, k, nr, nc)}")
        return (n, k, nr, nc)

    def float32_raw(self) -> builtins.float:
        return float(struct.unpack("<f", self.take(4))[0])

    def at_end(self) -> builtins.bool:
        return self.pos == len(self.data)

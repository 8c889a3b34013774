"""Write the server's icon, icon.png (the bundle's) and server/icon.svg (served in serverInfo),
from one drawing: a warehouse of synced tables. Run from the repository root."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

SIZE = 128
BACKGROUND = (31, 42, 68)
# (x, y, width, height, colour): three tables and the sync arrow's bar.
SHAPES = [
    (24, 28, 80, 14, (255, 255, 255)),
    (24, 50, 80, 14, (255, 255, 255)),
    (24, 72, 56, 14, (255, 255, 255)),
    (86, 72, 18, 30, (249, 189, 43)),
    (24, 94, 80, 8, (249, 189, 43)),
]
RADIUS = 22


def _inside_rounded(x: int, y: int) -> bool:
    cx = min(max(x, RADIUS), SIZE - 1 - RADIUS)
    cy = min(max(y, RADIUS), SIZE - 1 - RADIUS)
    return (x - cx) ** 2 + (y - cy) ** 2 <= RADIUS**2


def png() -> bytes:
    rows = bytearray()
    for y in range(SIZE):
        rows.append(0)
        for x in range(SIZE):
            colour, alpha = BACKGROUND, 255 if _inside_rounded(x, y) else 0
            for sx, sy, w, h, fill in SHAPES:
                if alpha and sx <= x < sx + w and sy <= y < sy + h:
                    colour = fill
            rows.extend((*colour, alpha))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", SIZE, SIZE, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(rows), 9))
        + chunk(b"IEND", b"")
    )


def svg() -> str:
    fill = "#%02x%02x%02x"
    shapes = "".join(
        f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="3" fill="{fill % c}"/>'
        for x, y, w, h, c in SHAPES
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {SIZE} {SIZE}">'
        f'<rect width="{SIZE}" height="{SIZE}" rx="{RADIUS}" fill="{fill % BACKGROUND}"/>'
        f"{shapes}</svg>\n"
    )


if __name__ == "__main__":
    Path("icon.png").write_bytes(png())
    Path("server/icon.svg").write_text(svg())

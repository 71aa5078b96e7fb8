"""Tiny media the tests draw or synthesize: PNGs, MP4s of moving shapes, WAVs of tones and noise bursts.

Every file is made from its arguments alone (no randomness without a seed), in milliseconds.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

COLOURS = [(220, 40, 40), (40, 70, 220), (240, 210, 30), (40, 170, 60), (140, 50, 180)]


def png(seed: int = 0, size: int = 24) -> bytes:
    """A small PNG: one coloured square on a plain background."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), (250, 250, 250))
    ImageDraw.Draw(img).rectangle([seed % 8, seed % 8, size // 2 + seed % 8, size // 2], fill=COLOURS[seed % 5])
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def write_png(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png(seed))
    return path


def video_frames(seed: int, frames: int = 12, size: int = 32) -> list[np.ndarray]:
    """A square of colour ``seed`` moving across a dark background, one step a frame."""
    out = []
    for t in range(frames):
        frame = np.full((size, size, 3), 20 + 10 * (seed % 3), dtype=np.uint8)
        x = (t * 2 + seed * 5) % (size - 8)
        frame[8:16, x : x + 8] = COLOURS[seed % 5]
        out.append(frame)
    return out


def write_video(path: Path, seed: int = 0, frames: int = 12, size: int = 32, fps: int = 8) -> Path:
    """An MP4 (MPEG-4 part 2 video, as PyAV's bundled FFmpeg writes it) of ``video_frames``."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for array in video_frames(seed, frames, size):
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut a file to ``keep`` of its bytes (an MP4 loses its index, which FFmpeg writes last)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def tone(seed: int, seconds: float = 0.5, rate: int = 22_050) -> np.ndarray:
    """A sine tone of a pitch set by ``seed`` with a burst of seeded noise in the middle, float32 mono."""
    t = np.arange(int(seconds * rate)) / rate
    samples = 0.3 * np.sin(2 * np.pi * (220 + 110 * seed) * t)
    burst = slice(len(t) // 3, len(t) // 2)
    samples[burst] += 0.2 * np.random.default_rng(seed).standard_normal(burst.stop - burst.start)
    return samples.astype(np.float32)


def write_wav(path: Path, seed: int = 0, seconds: float = 0.5, rate: int = 22_050, channels: int = 1) -> Path:
    """A 16-bit PCM WAV of ``tone`` (stereo: the tone on both channels)."""
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    samples = tone(seed, seconds, rate)
    soundfile.write(str(path), np.stack([samples] * channels, axis=1) if channels > 1 else samples, rate,
                    subtype="PCM_16")
    return path


def break_wav_header(path: Path) -> Path:
    """Keep ``RIFF…WAVE`` but break the ``fmt `` chunk (an unknown format code, zero channels)."""
    data = bytearray(path.read_bytes())
    fmt = data.index(b"fmt ")
    data[fmt + 8 : fmt + 12] = b"\x99\x99\x00\x00"  # format code 0x9999, 0 channels
    path.write_bytes(bytes(data))
    return path


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path

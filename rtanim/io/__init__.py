"""Frames in and out: file and live sources, the sinks (file, stream, virtual camera, preview), encoder and audio (docs/ARCHITECTURE.md, steps 1 and 7)."""

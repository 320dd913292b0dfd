"""Finding and following faces: tracking, One Euro smoothing, the canonical crop, landmark index sets, and compose (docs/ARCHITECTURE.md, steps 2-3 and 6)."""

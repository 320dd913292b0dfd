"""What the face should do: the AU vocabulary, presets, timelines and their plots (docs/ARCHITECTURE.md, step 1)."""

"""How good and how fast: ``rtanim eval`` (stills and self-reenactment) and ``rtanim bench --input`` (docs/ARCHITECTURE.md)."""

"""The stage graph on threads, the typed jobs at its boundaries, reuse, stats, sink threads and generator loading (docs/ARCHITECTURE.md)."""

"""Cross-check toolkit (work in progress)."""

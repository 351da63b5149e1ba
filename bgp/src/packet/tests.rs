//! Cross-cutting tests of the packet layer (filled below).

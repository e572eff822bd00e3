"""Object detection from an artifact alone: letterboxing, batched programs, head decoding and NMS."""

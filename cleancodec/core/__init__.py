"""Code shared by every stage: atomic writes, OS-error naming, stop signals, locks, devices and
ranks, hashing, the config loader, the codec and audio I/O."""

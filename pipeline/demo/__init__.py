"""Building blocks of the embedded demo corpus (``pipeline.demo_data`` puts them together).

- ``config``     the ``demo_data`` profile section as dataclasses
- ``debs``       fetch Debian packages with ``apt-get download`` (cached), unpack with ``dpkg -x``
- ``g722_codec`` raw G.722 (64 kbit/s, 16 kHz) files → float32 PCM
- ``speech``     prompts of one voice → trimmed utterances → clean session files
- ``noise_real`` noise from packages (music, ambience, machine loops, event sequences)
- ``noise_gen``  seeded generated noise (white, pink, brown, hum, crackle, babble, mixtures)
- ``splits``     speaker-disjoint splits and held-out noise files
- ``index``      ``index.csv`` rows, per-unit build state, summary table
- ``testset``    the DNS-style synthetic test set (names, pairing, building)
"""

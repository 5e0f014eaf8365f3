"""The embedded demo: its corpus (``cleancodec demo-data``) and the steps of ``make demo``.

- ``build``      build the demo corpus from the parts below (resumable, per unit)
- ``config``     the ``demo_data`` and ``demo`` profile sections as dataclasses
- ``debs``       fetch Debian packages with ``apt-get download`` (cached), unpack with ``dpkg -x``
- ``g722_codec`` raw G.722 (64 kbit/s, 16 kHz) files → float32 PCM
- ``speech``     prompts of one voice → trimmed utterances → clean session files
- ``noise_real`` noise from packages (music, ambience, machine loops, event sequences)
- ``splits``     speaker-disjoint splits and held-out noise files
- ``index``      per-unit build state, ``skipped.csv`` (``index.csv``: ``core.corpus_index``)
- ``summary``    the summary tables printed after a build
- ``testset``    the DNS-style synthetic test set (names: ``pipeline.dns``)
- ``preflight``  ``make demo``'s first step: can the DAC weights be had?
- ``excerpt``    ``make demo``'s test-set excerpt (the first clips of the test set)

Generated noise comes from the project's one noise synthesiser,
``cleancodec.datagen.noise_synth.generate``.
"""

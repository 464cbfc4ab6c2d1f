"""The run: what a recorded training run is, on disk and in memory.

The bottom layer: it imports nothing of weightwatch but :mod:`weightwatch.errors`.

- :mod:`.schema`: the format's names - files, versions, columns, tensor roles, record triggers;
- :mod:`.model`: :class:`~.model.Run`, :class:`~.model.Record`, :class:`~.model.TensorInfo`;
- :mod:`.stats` and :mod:`.rows`: the figures of a tensor against its previous copy;
- :mod:`.writer`, :mod:`.journal`, :mod:`.npz`, :mod:`.jsonio`, :mod:`.fsync`: writing it whole;
- :mod:`.reader` and :mod:`.seeddump`: reading it back, or reading naive weight dumps;
- :mod:`.validate`: the strict schema every file is checked against, and the checks between files;
- :mod:`.files` and :mod:`.digest`: opening a run's files safely; what binds the journal to the JSON;
- :mod:`.lock`: one writer per run directory.

Nothing is imported here, so that ``weightwatch.run.schema`` costs no numpy.
"""

"""Recording: a framework-free session, and one thin adapter per framework.

- :mod:`.session`: :class:`~.session.RecordingSession` - which tensors, their figures,
  writing the run whole, live checks, verdict, healthy weights, write errors;
- :mod:`.keras_callback`: ``WatchCallback``, the Keras 3 adapter (any backend);
- :mod:`.keras_restore`: ``restore``, recorded weights back into a Keras model.

The top of the stack below the CLI: the session uses :mod:`weightwatch.checking`
for live checks and :mod:`weightwatch.output` for the lines it prints.  Only the
adapters import a framework, and nothing imports them but :mod:`weightwatch`'s
lazy attributes and the demo.  A new framework is one new adapter module here.
"""

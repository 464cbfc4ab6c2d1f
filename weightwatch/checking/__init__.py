"""Checking: rules over a run's histories, evaluated into report objects.

Above :mod:`weightwatch.run`, below output and recording; no framework, no files written.

- :mod:`.checks`: the checks (pure functions over ``(records, tensors)`` arrays) and their options;
- :mod:`.rules` and :mod:`.config`: rules as validated data, packs and project configuration;
- :mod:`.engine`: rules x run -> :class:`~.report.Report`; :mod:`.keyword`: ``-k`` expressions;
- :mod:`.report`: the report objects every output reads;
- :mod:`.live`: which findings are new after each record, and whether to halt.
"""
